#!/usr/bin/env node
// The two ways to embed PostgreSQL (PGlite), measured on the same workloads in one run:
//   in-process   our SqlClient on PGlite (dist/aggregator/storage/PgliteClient.js), what the aggregator uses without DATABASE_URL;
//   socket       PGlite served by @electric-sql/pglite-socket on a loopback port, reached by @effect/sql-pg through
//                the aggregator's own Database layer (DATABASE_URL=postgres://postgres@127.0.0.1:<port>/postgres).
//
//   npx tsc -p tsconfig.build.json && node bench/pglite-socket.mjs [--store-only | --http-only]
//
// 1. Store: EventStore.insertMany from dist (the aggregator's multi-row unnest insert with ON CONFLICT) on a fresh
//    on-disk database, BENCH_EVENTS events (default 50,000, 30% re-sends of earlier events) in batches of 100 and
//    then of 1, BENCH_CONCURRENCY calls in flight (default 4, the aggregator's FLUSH_CONCURRENCY). Each variant runs
//    in its own process so start-up time and RSS are its own; the socket server runs inside that process (the
//    aggregator serving itself). Rows stored are checked against the distinct keys and against event_totals.
// 2. HTTP: `node dist/aggregator` (its own process) on a fresh on-disk database, either embedded (DATA_DIR) or
//    pointed at a pglite-socket server in another process (the package's `pglite-server` CLI), driven by
//    `node dist/publisher --events BENCH_HTTP_EVENTS --json` (default 20,000, 30% duplicates, 32 in flight).
//
// The socket server accepts `maxConnections` clients (default 1) and runs one query at a time whatever that
// number; the variants name it and the pool size (DB_POOL_SIZE) the aggregator opens against it.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { sampleRss, startAggregator } from "./lib/aggregator.mjs"
import { markdownTable } from "./lib/report.mjs"
import { fmt } from "./lib/workloads.mjs"

const env = process.env
const num = (name, fallback) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback)
const cfg = {
  events: num("BENCH_EVENTS", 50_000),
  batchSizes: [100, 1],
  concurrency: num("BENCH_CONCURRENCY", 4),
  httpEvents: num("BENCH_HTTP_EVENTS", 20_000),
  dupShare: 0.3
}
const self = fileURLToPath(import.meta.url)
const say = (msg) => console.error(`[pglite-socket ${new Date().toISOString().slice(11, 19)}] ${msg}`)
const mib = (bytes) => `${fmt(bytes / 1024 / 1024)} MiB`
const secs = (ms) => `${fmt(ms / 1000, 1)} s`
const vmHwmKb = (pid) => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)

const VARIANTS = [
  { name: "in-process PgliteClient", backend: "inproc" },
  { name: "socket, 1 connection, pool 1", backend: "socket", maxConnections: 1, pool: 1 },
  { name: "socket, 1 connection, pool 10 (DB_POOL_SIZE default)", backend: "socket", maxConnections: 1, pool: 10 },
  { name: "socket, 4 connections multiplexed, pool 4", backend: "socket", maxConnections: 4, pool: 4 }
]

// ---- the store workload, in a process of its own ------------------------------------------------------------

/** `n` events, a `dupShare` of them exact re-sends of an earlier one (seeded, so every variant sends the same). */
const workload = (prefix, n, dupShare, seed = 42) => {
  let s = seed >>> 0
  const rand = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const distinct = []
  const events = []
  for (let i = 0; i < n; i++) {
    if (distinct.length > 0 && rand() < dupShare) {
      events.push(distinct[Math.floor(rand() * distinct.length)])
    } else {
      const k = distinct.length
      const e = {
        topic: `${prefix}-topic-${k % 5}`,
        event_id: `${prefix}-${k}`,
        timestamp: new Date(Date.UTC(2025, 5, 1) + k * 1000).toISOString(),
        source: "bench",
        payload: JSON.stringify({ order: k, amount: Math.round(rand() * 100_000) / 100, note: "pglite-socket bench" })
      }
      distinct.push(e)
      events.push(e)
    }
  }
  return { events, distinct: distinct.length }
}

const runStore = async (variant) => {
  const { ConfigProvider, Effect, Layer } = await import("effect")
  const { AggregatorConfig } = await import("../dist/aggregator/Config.js")
  const { Database } = await import("../dist/aggregator/storage/Database.js")
  const { EventStore } = await import("../dist/aggregator/storage/EventStore.js")
  const dir = mkdtempSync(join(os.tmpdir(), "pglite-socket-bench-"))
  const t0 = performance.now()
  let settings = { DATA_DIR: join(dir, "data"), LOG_LEVEL: "Warn" }
  let close = async () => {}
  if (variant.backend === "socket") {
    const { PGlite } = await import("@electric-sql/pglite")
    const { PGLiteSocketServer } = await import("@electric-sql/pglite-socket")
    const db = await PGlite.create(join(dir, "data"))
    const server = new PGLiteSocketServer({ db, host: "127.0.0.1", port: 0, maxConnections: variant.maxConnections })
    await server.start()
    const port = server.getServerConn().split(":").pop()
    settings = { DATABASE_URL: `postgres://postgres@127.0.0.1:${port}/postgres`, DB_POOL_SIZE: String(variant.pool) }
    close = async () => {
      await server.stop()
      await db.close()
    }
  }
  const live = EventStore.Default.pipe(
    Layer.provideMerge(Database.Default),
    Layer.provide(AggregatorConfig.Default),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(settings)))))
  )
  const program = Effect.gen(function*() {
    const database = yield* Database
    const sql = yield* database.awaitConnected
    const startup = { ms: performance.now() - t0, rss: process.memoryUsage().rss }
    const store = yield* EventStore
    const count = Effect.map(
      sql`SELECT (SELECT count(*) FROM events)::int AS rows, (SELECT coalesce(sum(total), 0) FROM event_totals)::int AS totals`,
      ([r]) => r
    )
    const phases = []
    for (const batchSize of cfg.batchSizes) {
      const { events, distinct } = workload(`b${batchSize}`, cfg.events, cfg.dupShare)
      const batches = []
      for (let i = 0; i < events.length; i += batchSize) batches.push(events.slice(i, i + batchSize))
      const before = yield* count
      let peakRss = process.memoryUsage().rss
      const timer = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100)
      const errors = new Map()
      const from = performance.now()
      const outcomes = yield* Effect.forEach(
        batches,
        (batch) =>
          store.insertMany(batch).pipe(
            Effect.map((stored) => stored.filter(Boolean).length),
            Effect.catchAllCause((cause) =>
              Effect.sync(() => {
                const reason = String(cause).split("\n")[0].slice(0, 120)
                errors.set(reason, (errors.get(reason) ?? 0) + 1)
                return 0
              })
            )
          ),
        { concurrency: cfg.concurrency }
      )
      const ms = performance.now() - from
      clearInterval(timer)
      const after = yield* count
      const storedAnswers = outcomes.reduce((a, b) => a + b, 0)
      const rows = after.rows - before.rows
      phases.push({
        batchSize,
        events: events.length,
        distinct,
        ms,
        eventsPerSecond: events.length / (ms / 1000),
        failedBatches: [...errors.values()].reduce((a, b) => a + b, 0),
        batches: batches.length,
        errors: Object.fromEntries(errors),
        rows,
        storedAnswers,
        ok: rows === distinct && storedAnswers === distinct && after.rows === after.totals,
        peakRss
      })
    }
    return { startup, phases }
  })
  try {
    return await Effect.runPromise(program.pipe(Effect.provide(live), Effect.scoped))
  } finally {
    await close()
    rmSync(dir, { recursive: true, force: true })
  }
}

/** Runs one variant's store workload in a fresh node process; its last stdout line is the result. */
const storeInChild = async (variant) => {
  const child = spawn(process.execPath, [self, "--child", JSON.stringify(variant)], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  let err = ""
  child.stdout.on("data", (d) => (out += d))
  child.stderr.on("data", (d) => (err += d))
  const [code] = await once(child, "close")
  const last = out.trim().split("\n").pop()
  if (code !== 0 || !last?.startsWith("{")) throw new Error(`${variant.name}: exit ${code}\n${err.slice(-2000)}`)
  return JSON.parse(last)
}

// ---- the full aggregator over HTTP ------------------------------------------------------------------------

const waitForOutput = async (child, pattern, what, timeoutMs = 120_000) => {
  let seen = ""
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: no ${pattern} within ${timeoutMs} ms:\n${seen}`)), timeoutMs)
    child.stdout.on("data", (d) => {
      seen += d
      if (pattern.test(seen)) {
        clearTimeout(timer)
        resolve()
      }
    })
    child.on("exit", (code) => reject(new Error(`${what} exited (${code}):\n${seen}`)))
  })
}

const freePort = async () => {
  const { createServer } = await import("node:net")
  return new Promise((resolve) => {
    const srv = createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })
}

const publish = async (url, events) => {
  const child = spawn(process.execPath, ["dist/publisher", "--url", url, "--events", String(events), "--json"], {
    env: Object.fromEntries(Object.entries(env).filter(([k]) => !["MODE", "EVENTS", "DUPLICATES", "AGGREGATOR_URL"].includes(k))),
    stdio: ["ignore", "pipe", "ignore"]
  })
  let out = ""
  child.stdout.on("data", (d) => (out += d))
  const timer = setTimeout(() => child.kill("SIGTERM"), 600_000)
  // "close", not "exit": stdout may still hold the end of the summary when the process exits
  const [code] = await once(child, "close")
  clearTimeout(timer)
  try {
    return { code, ...JSON.parse(out) }
  } catch {
    return { code, ok: false, events, events_per_second: 0, retries: 0, failed: events, unparsed: out.slice(-500) }
  }
}

const runHttp = async (variant, outDir) => {
  const dir = mkdtempSync(join(os.tmpdir(), "pglite-socket-http-"))
  const t0 = performance.now()
  let server
  let databaseUrl
  try {
    if (variant.backend === "socket") {
      const port = await freePort()
      server = spawn(
        process.execPath,
        [
          "node_modules/@electric-sql/pglite-socket/dist/scripts/server.js",
          `--db=${join(dir, "data")}`,
          `--port=${port}`,
          "--host=127.0.0.1",
          `--max-connections=${variant.maxConnections}`
        ],
        { stdio: ["ignore", "pipe", "pipe"] }
      )
      server.stderr.resume()
      await waitForOutput(server, /PGLiteSocketServer listening/, "pglite-server")
      databaseUrl = `postgres://postgres@127.0.0.1:${port}/postgres`
    }
    const agg = await startAggregator({
      name: variant.name.replace(/\W+/g, "-"),
      databaseUrl,
      env: { DATA_DIR: join(dir, "data"), DB_POOL_SIZE: String(variant.pool ?? 10) },
      outDir
    })
    const startupMs = performance.now() - t0
    const rss = sampleRss(agg.pid)
    // a pool larger than the server accepts fails most requests and crawls: a shorter run shows it
    const summary = await publish(agg.url, variant.pool > variant.maxConnections ? Math.min(cfg.httpEvents, 5_000) : cfg.httpEvents)
    const aggregatorPeak = rss.stop().hwmKb * 1024
    const serverPeak = server ? vmHwmKb(server.pid) * 1024 : 0
    const stats = await fetch(`${agg.url}/stats`).then((r) => r.json()).catch(() => ({}))
    const stopped = await agg.stop()
    const failures = new Map()
    for (const line of readFileSync(agg.log, "utf8").split("\n")) {
      if (!line.includes('"storage failure"')) continue
      const reason = JSON.parse(line).annotations?.reason ?? "?"
      failures.set(reason, (failures.get(reason) ?? 0) + 1)
    }
    return { startupMs, summary, aggregatorPeak, serverPeak, stats, stopped, failures }
  } finally {
    if (server && server.exitCode === null) {
      server.kill("SIGTERM")
      await once(server, "exit")
    }
    rmSync(dir, { recursive: true, force: true })
  }
}

// ---- main ---------------------------------------------------------------------------------------------------

if (process.argv[2] === "--child") {
  const result = await runStore(JSON.parse(process.argv[3]))
  console.log(JSON.stringify(result))
  process.exit(0)
}

const only = process.argv[2]
const load = () => os.loadavg().map((x) => x.toFixed(2)).join(" ")
console.log(`# PGlite in-process vs over pglite-socket — ${new Date().toISOString()}`)
console.log(
  `node ${process.version}, ${os.cpus().length} cores, load average at start ${load()}; ` +
    `pglite ${JSON.parse(readFileSync("node_modules/@electric-sql/pglite/package.json", "utf8")).version}, ` +
    `pglite-socket ${JSON.parse(readFileSync("node_modules/@electric-sql/pglite-socket/package.json", "utf8")).version}`
)

if (only !== "--http-only") {
  const rows = []
  for (const variant of VARIANTS) {
    say(`store: ${variant.name}`)
    const r = await storeInChild(variant)
    const phase = (p) => [
      `${fmt(p.eventsPerSecond)}`,
      p.failedBatches > 0 ? `${fmt(p.failedBatches)} of ${fmt(p.batches)}` : "0",
      `${p.ok ? "✓" : "✗"} ${fmt(p.rows)}/${fmt(p.distinct)}`,
      mib(p.peakRss)
    ]
    rows.push([variant.name, secs(r.startup.ms), mib(r.startup.rss), ...r.phases.flatMap(phase)])
    for (const p of r.phases) {
      for (const [reason, n] of Object.entries(p.errors)) say(`  batch ${p.batchSize}: ${n} × ${reason}`)
    }
  }
  console.log(
    `\n## EventStore.insertMany, ${fmt(cfg.events)} events (30% re-sends), ${cfg.concurrency} calls in flight, on-disk database\n`
  )
  console.log(markdownTable(
    [
      "variant",
      "start-up (open + migrate)",
      "RSS after start",
      "batch 100: events/s",
      "failed batches",
      "rows/distinct",
      "peak RSS",
      "batch 1: events/s",
      "failed batches",
      "rows/distinct",
      "peak RSS"
    ],
    rows
  ))
}

if (only !== "--store-only") {
  const outDir = mkdtempSync(join(os.tmpdir(), "pglite-socket-logs-"))
  const rows = []
  for (const variant of VARIANTS) {
    say(`http: ${variant.name}`)
    const r = await runHttp(variant, outDir)
    const s = r.summary
    for (const [reason, n] of r.failures) say(`  ${n} × storage failure: ${reason}`)
    if (s.unparsed !== undefined) say(`  publisher exit ${s.code}, output: ${s.unparsed}`)
    rows.push([
      variant.backend === "inproc" ? "aggregator, DATA_DIR (embedded)" : `aggregator + pglite-server, ${variant.name.slice(8)}`,
      secs(r.startupMs),
      fmt(s.events),
      fmt(s.events_per_second),
      fmt(r.stats.storage_failures),
      fmt(s.retries),
      fmt((s.failed ?? 0) + (s.rejected ?? 0)),
      s.ok ? "OK" : "FAILED",
      `${fmt(r.stats.database_total_rows)}/${fmt(s.distinct_keys)}`,
      r.serverPeak > 0
        ? `${mib(r.aggregatorPeak + r.serverPeak)} (${mib(r.aggregatorPeak)} + ${mib(r.serverPeak)})`
        : mib(r.aggregatorPeak)
    ])
  }
  console.log(
    `\n## node dist/aggregator over HTTP, \`node dist/publisher --events ${cfg.httpEvents} --json\` (30% duplicates, 32 in flight; ` +
      `5,000 events where the pool exceeds the server's connections)\n`
  )
  console.log(markdownTable(
    ["variant", "start-up until /ready", "events", "events/s", "503 storage failures", "publisher retries", "failed", "verification", "rows/distinct", "peak RSS (VmHWM, initdb included)"],
    rows
  ))
  console.log(`\naggregator logs: ${outDir}`)
}
console.log(`\nload average at end ${load()}`)
