#!/usr/bin/env node
// npm run bench [-- --quick]: the aggregator's throughput, latency, ceilings and memory in one table.
// node bench/run.mjs --reads-only [--quick]: only the table at scale (seeding, /stats, /topics, filtered
// /events pages, the export), printed and not written to BENCHMARKS.md. BENCH_READS_DB=<url> seeds (once) and
// keeps that database instead of a fresh one.
// Runs the built dist/aggregator against the local PostgreSQL (BENCH_DATABASE_URL, default
// postgres://postgres@127.0.0.1:5432/postgres), on fresh databases it drops at the end.
import { existsSync, mkdirSync, writeFileSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import pg from "pg"
import {
  measureCpu,
  rssKb,
  sampleRss,
  settingOverrides,
  startAggregator,
  startBareServer,
  startNaiveReference
} from "./lib/aggregator.mjs"
import { embeddedPhase, embeddedRows } from "./lib/embedded-phase.mjs"
import { publisherPhase } from "./lib/publisher-phase.mjs"
import { readsPhase, SEED_TOPICS, seedInsert } from "./lib/reads-phase.mjs"
import { markdownTable, writeLatestRun } from "./lib/report.mjs"
import { batch, describeCodes, fmt, getLoad, singleEvent } from "./lib/workloads.mjs"
import { summarizeFile } from "./profile-summary.mjs"

const env = process.env
const num = (name, fallback) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback)
const quick = process.argv.includes("--quick") || env.BENCH_QUICK === "1"
// only the table at scale: seeding, GET /stats, GET /topics, filtered GET /events pages and the export
const readsOnly = process.argv.includes("--reads-only")
const profileMode = (env.BENCH_PROFILE ?? "").toLowerCase()
const profileSingle = ["1", "true", "single", "all"].includes(profileMode)
const profileBatch = ["batch", "all"].includes(profileMode)

const cfg = {
  connections: num("BENCH_CONNECTIONS", 64),
  warmup: num("BENCH_WARMUP", 3),
  duration: num("BENCH_DURATION", 12),
  dupShare: 0.3,
  batchConnections: num("BENCH_BATCH_CONNECTIONS", 4),
  batchSize: 1000,
  batchRequests: num("BENCH_BATCH_REQUESTS", 1000),
  ceilingRows: num("BENCH_CEILING_ROWS", 300_000),
  statsRows: num("BENCH_STATS_ROWS", quick ? 1_000_000 : 10_000_000),
  // the target is read at the first: one request at a time, latency without queueing behind other requests
  statsConnections: (env.BENCH_STATS_CONNECTIONS ?? "1,8").split(",").map(Number),
  statsDuration: num("BENCH_STATS_DURATION", 5),
  bareDuration: num("BENCH_BARE_DURATION", 5),
  seedChunk: 1_000_000,
  exportRows: num("BENCH_EXPORT_ROWS", quick ? 100_000 : 1_000_000),
  seedConcurrency: num("BENCH_SEED_CONCURRENCY", 2)
}
const adminUrl = env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "").replace("T", "_")
const outDir = env.BENCH_OUT_DIR ?? join(os.tmpdir(), `log-aggregator-bench-${stamp}`)
mkdirSync(outDir, { recursive: true })

const say = (msg) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`)
const mib = (kb) => kb / 1024
const pct = (x) => `${(100 * x).toFixed(0)}%`
const ms = (x) => (x === undefined ? "—" : `${fmt(x, x < 10 ? 2 : 1)} ms`)
const cpuText = (c) =>
  c ? [c.aggregator, c.postgres, c.bench, c.machine].map((x) => (x === undefined ? "—" : pct(x))).join(" / ") : "—"

// ---- databases ------------------------------------------------------------------------------------------

const databases = []
const dbUrl = (name) => {
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  return u.toString()
}
const withClient = async (url, fn) => {
  const client = new pg.Client({ connectionString: url, application_name: "log-aggregator-bench" })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}
const freshDatabase = async (suffix) => {
  const name = `bench_${stamp}_${process.pid}_${suffix}`.toLowerCase()
  await withClient(adminUrl, (c) => c.query(`CREATE DATABASE ${name}`))
  databases.push(name)
  return dbUrl(name)
}
const dropDatabases = async () => {
  for (const name of databases.splice(0)) {
    await withClient(adminUrl, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch((e) =>
      say(`could not drop ${name}: ${e.message}`)
    )
  }
}

const storedIds = (url, topic) =>
  withClient(url, async (c) => (await c.query("SELECT event_id FROM events WHERE topic = $1", [topic])).rows.map((r) => r.event_id))
const countTopic = (url, topic) =>
  withClient(url, async (c) => Number((await c.query("SELECT count(*)::int8 AS n FROM events WHERE topic = $1", [topic])).rows[0].n))
const totalsCheck = (url) =>
  withClient(url, async (c) => {
    const { rows } = await c.query(
      "SELECT (SELECT count(*) FROM events)::int8 AS rows, (SELECT coalesce(sum(total), 0) FROM event_totals)::int8 AS totals"
    )
    const r = { rows: Number(rows[0].rows), totals: Number(rows[0].totals) }
    return { ...r, ok: r.rows === r.totals, text: `event_totals ${fmt(r.totals)} ${r.rows === r.totals ? "=" : "≠"} count(*) ${fmt(r.rows)}` }
  })

// Same row shape as the aggregator writes: text timestamp cast to timestamptz, payload text cast to jsonb.
const generatedInsert = (topicSql) => `
  INSERT INTO events (topic, event_id, "timestamp", source, payload)
  SELECT ${topicSql}, $1 || '-' || lpad(g::text, 10, '0'),
         ('2025-01-31T12:00:00.' || lpad((g % 1000)::text, 3, '0') || 'Z')::timestamptz, 'bench',
         ('{"n":' || g || ',"user":"u' || (g % 1000) || '","amount":42.5,"tags":["a","b"]}')::jsonb
  FROM generate_series($2::int8, $3::int8) AS g
  ON CONFLICT (topic, event_id) DO NOTHING`

// ---- the run ------------------------------------------------------------------------------------------------

const running = new Set()
const start = async (opts) => {
  const agg = await startAggregator({ outDir, ...opts })
  running.add(agg)
  return agg
}
const stop = async (agg) => {
  const exit = await agg.stop()
  running.delete(agg)
  return exit
}

const results = {}
const checks = []
const timings = []
const timed = async (label, fn) => {
  const t0 = Date.now()
  try {
    return await fn()
  } finally {
    timings.push(`${label} ${((Date.now() - t0) / 1000).toFixed(0)} s`)
  }
}

const singleEventPhase = async (label, groupCommit, profile) => {
  const url = await freshDatabase(groupCommit ? "gc_on" : "gc_off")
  const agg = await start({ name: `single-${label}`, databaseUrl: url, env: { GROUP_COMMIT: String(groupCommit) }, profile })
  say(`single-event, group commit ${label}: warm-up ${cfg.warmup} s`)
  await singleEvent({ url: agg.url, topic: "warmup", prefix: "w", connections: cfg.connections, duration: cfg.warmup, dupShare: cfg.dupShare })
  say(`single-event, group commit ${label}: ${cfg.duration} s, ${cfg.connections} connections`)
  const { result, cpu, window, wall } = await measureCpu(agg.pid, () =>
    singleEvent({ url: agg.url, topic: "single", prefix: "e", connections: cfg.connections, duration: cfg.duration, dupShare: cfg.dupShare })
  )
  const metrics = await fetch(`${agg.url}/metrics`).then((r) => r.text()).catch(() => "")
  const sum = Number(/^aggregator_batch_size_events_sum (\S+)/m.exec(metrics)?.[1])
  const count = Number(/^aggregator_batch_size_events_count (\S+)/m.exec(metrics)?.[1])
  await stop(agg)
  const verify = result.verify(await storedIds(url, "single"))
  const totals = await totalsCheck(url)
  checks.push(verify.ok, totals.ok)
  say(`  ${fmt(result.eventsPerSec)} events/s, p99 ${ms(result.p99)}; ${verify.text}; ${totals.text}`)
  return { ...result, cpu, wall, verify, totals, window, perCommit: sum / count, profileFile: agg.profileFile }
}

// The measuring stick: bench/reference/naive-server.mjs (node:http + pg, one INSERT per request) under the same load.
const naivePhase = async () => {
  const url = await freshDatabase("naive")
  const naive = await startNaiveReference({ databaseUrl: url })
  try {
    say(`naive reference: warm-up ${cfg.warmup} s`)
    await singleEvent({ url: naive.url, topic: "warmup", prefix: "w", connections: cfg.connections, duration: cfg.warmup, dupShare: cfg.dupShare })
    say(`naive reference: ${cfg.duration} s, ${cfg.connections} connections`)
    const { result, cpu, wall } = await measureCpu(naive.pid, () =>
      singleEvent({ url: naive.url, topic: "single", prefix: "e", connections: cfg.connections, duration: cfg.duration, dupShare: cfg.dupShare })
    )
    await naive.stop()
    const verify = result.verify(await storedIds(url, "single"))
    checks.push(verify.ok)
    say(`  ${fmt(result.eventsPerSec)} events/s, p99 ${ms(result.p99)}; ${verify.text}`)
    return { ...result, cpu, wall, verify }
  } finally {
    await naive.stop().catch(() => {})
  }
}

/** Process CPU time of the server divided by the events it answered (µs). */
const cpuPerEvent = (r, events) => (r.cpu.aggregator * r.wall * 1e6) / events

/** Seeds the table to `cfg.statsRows` rows, then measures GET /stats and the reads at that scale. */
const atScalePhase = async (agg, mainUrl) => {
  await timed("seeding", async () => {
    const have = (await totalsCheck(mainUrl)).rows
    const need = Math.max(0, cfg.statsRows - have)
    results.statsRows = have + need
    say(`seeding ${fmt(need)} rows over ${fmt(SEED_TOPICS)} topics server-side (${fmt(cfg.seedChunk)} a statement, ${cfg.seedConcurrency} at a time)`)
    const chunks = []
    for (let from = 1; from <= need; from += cfg.seedChunk) chunks.push([from, Math.min(need, from + cfg.seedChunk - 1)])
    const t0 = Date.now()
    let done = 0
    await Promise.all(Array.from({ length: cfg.seedConcurrency }, () =>
      withClient(mainUrl, async (c) => {
        await c.query("SET synchronous_commit = off")
        for (let chunk = chunks.shift(); chunk; chunk = chunks.shift()) {
          await c.query("BEGIN")
          const n = Number((await c.query(seedInsert(`'seed-' || (g % ${SEED_TOPICS})`), ["s", chunk[0], chunk[1]])).rows[0].n)
          await c.query("UPDATE event_totals SET total = total + $1 WHERE shard = 0", [n])
          await c.query("COMMIT")
          done += n
          say(`  seeded ${fmt(done)} / ${fmt(need)} (${((Date.now() - t0) / 1000).toFixed(0)} s)`)
        }
      })
    ))
    results.seedSeconds = (Date.now() - t0) / 1000
    // the planner's statistics, as autovacuum would gather them after a bulk load this size (not timed)
    await withClient(mainUrl, (c) => c.query("ANALYZE events"))
    const totals = await totalsCheck(mainUrl)
    checks.push(totals.ok && totals.rows === results.statsRows)
    results.seedTotals = totals
  })

  await timed("GET /stats", async () => {
    const t0 = process.hrtime.bigint()
    await withClient(mainUrl, (c) => c.query("SELECT count(*) FROM events"))
    results.countMs = Number(process.hrtime.bigint() - t0) / 1e6
    await getLoad({ url: agg.url, path: "/stats", connections: 1, duration: 1 }) // warm-up
    results.stats = []
    for (const connections of cfg.statsConnections) {
      say(`GET /stats at ${fmt(results.seedTotals.rows)} rows: ${cfg.statsDuration} s, ${connections} connection(s)`)
      const { result, cpu, window } = await measureCpu(agg.pid, () =>
        getLoad({ url: agg.url, path: "/stats", connections, duration: cfg.statsDuration, check: true })
      )
      let reported
      try {
        reported = JSON.parse(result.firstBody).database_total_rows
      } catch {
        reported = undefined
      }
      const ok = reported === results.seedTotals.rows && results.seedTotals.ok
      checks.push(ok)
      results.stats.push({
        ...result,
        connections,
        cpu,
        window,
        text: `database_total_rows ${fmt(reported)} ${ok ? "=" : "≠"} count(*) ${fmt(results.seedTotals.rows)} ${ok ? "✓" : "✗"}` +
          ` (SELECT count(*) itself takes ${fmt(results.countMs)} ms)`
      })
      say(`  p99 ${ms(result.p99)}; ${results.stats.at(-1).text}`)
    }
  })
  results.reads = await timed("reads at scale", () =>
    readsPhase({
      agg,
      dbUrl: mainUrl,
      withClient,
      rows: results.seedTotals.rows,
      seeded: cfg.statsRows,
      duration: cfg.statsDuration,
      exportRows: cfg.exportRows,
      say,
      checks
    }))
}

const cpuPerRequest = (r) => `CPU a request: aggregator ${fmt(r.aggMs, 2)} ms, PostgreSQL ${fmt(r.pgMs, 2)} ms`

/** The rows and targets of the reads at scale (GET /topics, filtered pages, export). */
const readsTable = () => {
  const { reads, statsRows } = results
  const scale = `${fmt(statsRows)} rows over ${fmt(SEED_TOPICS)} topics${statsRows >= 10_000_000 ? "" : " (NOT MET AS STATED: not 10M)"}`
  const worstPage = reads.pages.reduce((w, p) => (p.p99 > w.p99 ? p : w), reads.pages[0])
  const e = reads.export
  const rows = [
    [`GET /topics at ${scale} (1 conn, ${cfg.statsDuration} s)`, `${fmt(reads.topics.perSec)} req/s`, ms(reads.topics.p50), ms(reads.topics.p99), "—", cpuText(reads.topics.cpu), `${cpuPerRequest(reads.topics)}; ${reads.topics.text}`],
    ...reads.pages.map((p) => [`GET /events, ${p.label} (1 conn, ${cfg.statsDuration} s): \`${p.path}\``, `${fmt(p.perSec)} req/s`, ms(p.p50), ms(p.p99), "—", cpuText(p.cpu), `${cpuPerRequest(p)}; ${p.text}`]),
    [
      `GET /events/export?topic=export, ${fmt(e.rows)} rows in one topic`,
      `${fmt(e.lines / e.seconds)} events/s`,
      "—",
      "—",
      "—",
      "—",
      `${fmt(e.lines)} lines ${e.ok ? "✓" : "✗"}, ${fmt(e.bytes / 2 ** 20)} MiB in ${e.seconds.toFixed(1)} s; aggregator RSS ${fmt(mib(e.baselineKb))} MiB before, ` +
        `largest sample ${fmt(mib(e.maxSampleKb))} MiB (${e.samples} samples, every 100 ms)`
    ]
  ]
  const targets = [
    [`GET /topics p99 ≤ 20 ms at ${scale}, 1 conn`, reads.topics.p99 <= 20, `${ms(reads.topics.p99)}, ${pct(reads.topics.p99 / 20)} of budget`],
    [`filtered GET /events page p99 ≤ 20 ms at ${scale}, 1 conn (worst of ${reads.pages.length}: ${worstPage.label})`, worstPage.p99 <= 20, `${ms(worstPage.p99)}, ${pct(worstPage.p99 / 20)} of budget`]
  ]
  return { rows, targets }
}

/** `--reads-only`: a fresh database seeded to scale, GET /stats, the reads; nothing else. */
const readsOnlyMain = async () => {
  const began = Date.now()
  const loadAtStart = os.loadavg().map((x) => x.toFixed(2)).join(", ")
  // BENCH_READS_DB: a database to seed (once) and keep, so later runs measure without seeding again
  const mainUrl = env.BENCH_READS_DB ?? await freshDatabase("reads")
  const agg = await start({ name: "reads", databaseUrl: mainUrl })
  await atScalePhase(agg, mainUrl)
  await stop(agg)
  const { rows, targets } = readsTable()
  const statsRows = results.stats.map((st) => [
    `GET /stats at ${fmt(results.statsRows)} rows (${st.connections} conn, ${cfg.statsDuration} s; seeded server-side in ${results.seedSeconds.toFixed(0)} s)`,
    `${fmt(st.perSec)} req/s`, ms(st.p50), ms(st.p99), "—", cpuText(st.cpu), st.text
  ])
  const table = markdownTable(
    ["measurement", "result", "p50", "p99", "non-2xx", "CPU agg / pg / bench / machine", "check"],
    [...statsRows, ...rows, ...targets.map(([what, pass, ratio]) => [`target: ${what}`, `${pass ? "PASS" : "MISS"} (${ratio})`, "", "", "", "", ""])]
  )
  console.log(`\n- date: ${new Date().toISOString()}\n- command: \`node ${process.argv.slice(1).map((a) => a.replace(process.cwd() + "/", "")).join(" ")}\`` +
    `\n- load average at start ${loadAtStart}; time: ${timings.join(", ")}; total ${((Date.now() - began) / 1000).toFixed(0)} s\n\n${table}`)
  return { verdicts: targets, broken: checks.some((ok) => !ok) }
}

const main = async () => {
  if (readsOnly) return readsOnlyMain()
  if (!existsSync("dist/aggregator/index.js")) throw new Error("dist/aggregator is missing: run `npm run build` first")
  const began = Date.now()
  const loadAtStart = os.loadavg().map((x) => x.toFixed(2)).join(", ")
  const pgVersion = await withClient(adminUrl, async (c) => (await c.query("SHOW server_version")).rows[0].server_version)
  say(`output (logs, profiles): ${outDir}`)

  say(`calibration: bare node:http server, GET / ${cfg.bareDuration} s, ${cfg.connections} connections`)
  await timed("bare node:http", async () => {
    const bare = await startBareServer()
    try {
      const { result, cpu } = await measureCpu(bare.pid, () =>
        getLoad({ url: bare.url, path: "/", connections: cfg.connections, duration: cfg.bareDuration })
      )
      results.bare = { ...result, cpu }
      say(`  ${fmt(result.perSec)} req/s, p99 ${ms(result.p99)}`)
    } finally {
      await bare.stop()
    }
  })

  results.naive = await timed("naive reference", naivePhase)
  results.on = await timed("group commit ON", () => singleEventPhase("on", true, profileSingle))
  results.off = await timed("group commit OFF", () => singleEventPhase("off", false, false))
  say("embedded (PGlite): first starts, then the same single-event and batch loads")
  results.embedded = await timed("embedded", async () =>
    embeddedPhase({ start, stop, serverUrl: await freshDatabase("ready"), cfg, say, checks }))
  results.publisher = await timed("publisher vs wrk", () => publisherPhase({ freshDatabase, start, stop, say, outDir, quick }))
  checks.push(...results.publisher.checks)

  const mainUrl = await freshDatabase("main")
  const agg = await start({ name: "main", databaseUrl: mainUrl, env: { GROUP_COMMIT: "true" }, profile: profileBatch })

  say(`batch: ${fmt(cfg.batchRequests)} requests × ${fmt(cfg.batchSize)} events, ${cfg.batchConnections} connections`)
  await timed(`batch ${fmt(cfg.batchRequests * cfg.batchSize)} events`, async () => {
    const idleRssKb = rssKb(agg.pid)
    const rss = sampleRss(agg.pid, 100)
    const { result, cpu, window, wall } = await measureCpu(agg.pid, () =>
      batch({ url: agg.url, topic: "batch", connections: cfg.batchConnections, amount: cfg.batchRequests, batchSize: cfg.batchSize })
    )
    const mem = rss.stop()
    const verify = result.verify(await countTopic(mainUrl, "batch"))
    const totals = await totalsCheck(mainUrl)
    checks.push(verify.ok, totals.ok)
    results.batch = { ...result, cpu, wall, verify, totals, window }
    results.rss = { ...mem, idleRssKb }
    say(`  ${fmt(result.eventsPerSec)} events/s; ${verify.text}; peak RSS ${fmt(mib(mem.hwmKb))} MiB`)
  })

  say(`GET /: ${cfg.duration} s, ${cfg.connections} connections`)
  await timed("GET /", async () => {
    const { result, cpu, window } = await measureCpu(agg.pid, () =>
      getLoad({ url: agg.url, path: "/", connections: cfg.connections, duration: cfg.duration })
    )
    results.root = { ...result, cpu, window }
    say(`  ${fmt(result.perSec)} req/s, p99 ${ms(result.p99)}`)
  })

  say(`SQL ceiling: INSERT … generate_series(1, ${fmt(cfg.ceilingRows)})`)
  await timed("SQL ceiling", () =>
    withClient(mainUrl, async (c) => {
      const { result, cpu, wall } = await measureCpu(undefined, () => c.query(generatedInsert("'ceiling'"), ["c", 1, cfg.ceilingRows]))
      await c.query("UPDATE event_totals SET total = total + $1 WHERE shard = 0", [result.rowCount])
      // not timed: the ceiling is PostgreSQL's plain insert; GET /topics must still add up afterwards
      await c.query(`INSERT INTO topic_totals (topic, shard, total, first_received_at, last_received_at)
        SELECT topic, 0, count(*), min(received_at), max(received_at) FROM events WHERE topic = 'ceiling' GROUP BY topic`)
      const ok = result.rowCount === cfg.ceilingRows
      checks.push(ok)
      results.ceiling = {
        rows: result.rowCount,
        seconds: wall,
        perSec: result.rowCount / wall,
        cpu,
        text: `${fmt(result.rowCount)} rows inserted in ${wall.toFixed(2)} s ${ok ? "✓" : "✗"}`
      }
      say(`  ${fmt(results.ceiling.perSec)} rows/s`)
    })
  )

  await atScalePhase(agg, mainUrl)
  await stop(agg)

  const totalSeconds = (Date.now() - began) / 1000
  const { table, verdicts } = buildTable()
  const command = env.npm_lifecycle_event === "bench"
    ? `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`
    : `node ${process.argv.slice(1).map((a) => a.replace(process.cwd() + "/", "")).join(" ")}`
  const overrides = settingOverrides()
  const benchVars = Object.keys(env).filter((k) => k.startsWith("BENCH_") && k !== "BENCH_OUT_DIR").map((k) => `${k}=${env[k]}`)
  const header = [
    `- date: ${new Date().toISOString()}`,
    `- machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model.trim() ?? "?"}), ${fmt(os.totalmem() / 2 ** 30, 1)} GiB memory, ` +
      `load average at start ${loadAtStart}; node ${process.version}; PostgreSQL ${pgVersion}`,
    `- command: \`${command}\`${quick ? ` (quick: /stats measured at ${fmt(cfg.statsRows)} rows, not 10M)` : ""}`,
    `- aggregator: \`node dist/aggregator\`, settings at their defaults${overrides.length ? ` except ${overrides.join(", ")}` : ""}` +
      (benchVars.length ? `; bench variables ${benchVars.join(", ")}` : "") +
      (profileMode ? `; profiled with --cpu-prof (${profileMode}), so its numbers carry profiler overhead` : ""),
    `- CPU column: share of one core used during the phase by the aggregator (in its row, the naive server) / PostgreSQL (all backends) / the ` +
      `bench process (autocannon) / the whole machine (${os.availableParallelism()} cores = ${os.availableParallelism() * 100}%)`,
    `- time: ${timings.join(", ")}; total ${totalSeconds.toFixed(0)} s`
  ].join("\n")
  const section = `${header}\n\n${table}\n`
  console.log(`\n${section}`)
  if (env.BENCH_NO_WRITE !== "1") writeLatestRun("BENCHMARKS.md", section)

  const profiles = [
    ["single-event, group commit ON, measured phase only", results.on.profileFile, results.on.window, "single"],
    ["POST /publish/batch phase only", agg.profileFile, results.batch.window, "batch"],
    ["GET / phase only", agg.profileFile, results.root.window, "root"],
    [`GET /stats phase only, ${results.stats[0].connections} conn`, agg.profileFile, results.stats[0].window, "stats"]
  ]
  for (const [label, file, window, part] of profiles) {
    if (!file) continue
    if (!existsSync(file)) {
      say(`no profile at ${file}`)
      continue
    }
    const summary = summarizeFile(file, 20, window)
    writeFileSync(file.replace(/\.cpuprofile$/, `.${part}.txt`), summary)
    console.log(`\nCPU profile of the aggregator, ${label} (${file}; node bench/profile-summary.mjs ${file} --window ${window.from} ${window.to}):\n${summary}`)
  }
  return { verdicts, broken: checks.some((ok) => !ok) }
}

const buildTable = () => {
  const { on, off, batch: b, root, ceiling, stats, rss, bare, naive } = results
  const usOn = cpuPerEvent(on, on.ok)
  const usBatch = cpuPerEvent(b, b.processed)
  const nonOk = (r) => (r.non2xx ? `${fmt(r.non2xx)} (${describeCodes(r.codes)})` : "0") +
    (r.errors ? `; ${fmt(r.errors)} errors${r.timeouts ? `, ${r.timeouts} timeouts` : ""}` : "")
  const single = (r, label) => [
    `POST /publish single-event, group commit ${label} (${cfg.connections} conn, ${cfg.duration} s, ${pct(cfg.dupShare)} re-sends)`,
    `${fmt(r.eventsPerSec)} events/s`,
    ms(r.p50),
    ms(r.p99),
    nonOk(r),
    cpuText(r.cpu),
    `${fmt(cpuPerEvent(r, r.ok))} µs CPU an event` + (label === "ON" ? `, ${fmt(r.perCommit, 1)} events a commit` : "") +
    `; ${r.verify.text}; ${r.totals.text}`
  ]
  const verdict = (pass, ratio) => `${pass ? "PASS" : "MISS"} (${ratio})`
  const rssMiB = mib(Math.max(rss.hwmKb, rss.maxRssKb))
  const statsLabel = `${fmt(results.statsRows)} rows${quick ? ", quick" : ""}`
  const reads = readsTable()
  const targets = [
    ["single-event POST /publish ≥ 1.5× the naive reference (≥ 1.0× to resolve)", on.eventsPerSec >= 1.5 * naive.eventsPerSec, `${(on.eventsPerSec / naive.eventsPerSec).toFixed(2)}×`],
    ["aggregator CPU ≤ 150 µs a single event", usOn <= 150, `${fmt(usOn)} µs`],
    ["aggregator CPU ≤ 8 µs a batched event", usBatch <= 8, `${fmt(usBatch, 1)} µs`],
    ["batch ingest ≥ 50% of the SQL ceiling", b.eventsPerSec >= 0.5 * ceiling.perSec, pct(b.eventsPerSec / ceiling.perSec)],
    ["single-event group commit ON ≥ 3× OFF", on.eventsPerSec >= 3 * off.eventsPerSec, `${(on.eventsPerSec / off.eventsPerSec).toFixed(2)}×`],
    [
      `GET /stats p99 ≤ 10 ms at 10M rows, ${stats[0].connections} conn${results.statsRows >= 10_000_000 ? "" : ` (NOT MET AS STATED: measured at ${statsLabel})`}`,
      stats[0].p99 <= 10,
      `${ms(stats[0].p99)}, ${pct(stats[0].p99 / 10)} of budget`
    ],
    [`aggregator RSS ≤ 256 MiB through 1M events${cfg.batchRequests * cfg.batchSize === 1_000_000 ? "" : ` (NOT MET AS STATED: ${fmt(cfg.batchRequests * cfg.batchSize)} events)`}`, rssMiB <= 256, `${fmt(rssMiB)} MiB, ${pct(rssMiB / 256)} of budget`],
    ...results.publisher.targets,
    ...reads.targets
  ]
  const rows = [
    [
      `naive reference: node:http + pg, one INSERT … ON CONFLICT per request (${cfg.connections} conn, ${cfg.duration} s, ${pct(cfg.dupShare)} re-sends)`,
      `${fmt(naive.eventsPerSec)} events/s`,
      ms(naive.p50),
      ms(naive.p99),
      nonOk(naive),
      cpuText(naive.cpu),
      `${fmt(cpuPerEvent(naive, naive.ok))} µs CPU an event; ${naive.verify.text}`
    ],
    single(on, "ON"),
    single(off, "OFF"),
    [
      `POST /publish/batch, ${fmt(cfg.batchSize)} events a request (${cfg.batchConnections} conn, ${fmt(cfg.batchRequests)} requests)`,
      `${fmt(b.eventsPerSec)} events/s`,
      ms(b.p50),
      ms(b.p99),
      nonOk(b),
      cpuText(b.cpu),
      `${fmt(usBatch, 1)} µs CPU an event; ${b.verify.text}; ${b.totals.text}`
    ],
    [`GET / — HTTP ceiling, no database (${cfg.connections} conn, ${cfg.duration} s)`, `${fmt(root.perSec)} req/s`, ms(root.p50), ms(root.p99), nonOk(root), cpuText(root.cpu), ""],
    [
      `calibration: a bare node:http server's GET / (${cfg.connections} conn, ${cfg.bareDuration} s)`,
      `${fmt(bare.perSec)} req/s`,
      ms(bare.p50),
      ms(bare.p99),
      nonOk(bare),
      cpuText(bare.cpu),
      `the aggregator's GET / is ${pct(root.perSec / bare.perSec)} of it`
    ],
    [
      `SQL ceiling: one INSERT … SELECT generate_series(1, ${fmt(cfg.ceilingRows)}) ON CONFLICT DO NOTHING`,
      `${fmt(ceiling.perSec)} rows/s`,
      "—",
      "—",
      "—",
      cpuText(ceiling.cpu),
      ceiling.text
    ],
    ...stats.map((st) => [
      `GET /stats at ${statsLabel} (${st.connections} conn, ${cfg.statsDuration} s; seeded server-side in ${results.seedSeconds.toFixed(0)} s)`,
      `${fmt(st.perSec)} req/s`,
      ms(st.p50),
      ms(st.p99),
      nonOk(st),
      cpuText(st.cpu),
      st.text
    ]),
    [
      `aggregator peak RSS through the ${fmt(cfg.batchRequests * cfg.batchSize)}-event batch run`,
      `${fmt(rssMiB)} MiB`,
      "—",
      "—",
      "—",
      "—",
      `VmHWM ${fmt(mib(rss.hwmKb))} MiB; ${fmt(mib(rss.idleRssKb))} MiB before the run; largest VmRSS sample ${fmt(mib(rss.maxRssKb))} MiB (${rss.samples} samples, every 100 ms)`
    ],
    ...results.publisher.rows,
    ...reads.rows,
    ...targets.map(([what, pass, ratio]) => [`target: ${what}`, verdict(pass, ratio), "", "", "", "", ""]),
    ...embeddedRows(results.embedded, on, cfg, { ms, cpuText })
  ]
  const table = markdownTable(
    ["measurement", "result", "p50", "p99", "non-2xx", "CPU agg / pg / bench / machine", "check"],
    rows
  )
  return { table, verdicts: targets }
}

const cleanup = async () => {
  for (const agg of running) await agg.stop().catch(() => {})
  running.clear()
  await dropDatabases()
}

process.once("SIGINT", () => {
  say("interrupted: stopping the aggregator and dropping the bench databases")
  cleanup().finally(() => process.exit(130))
})

main()
  .then(async ({ broken }) => {
    await cleanup()
    if (broken) {
      say("a correctness check failed (✗ above): the numbers are not trustworthy")
      process.exitCode = 1
    }
  })
  .catch(async (e) => {
    console.error(e)
    await cleanup()
    process.exitCode = 1
  })
