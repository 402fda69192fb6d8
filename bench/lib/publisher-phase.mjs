// The publisher measured against wrk: both against the same aggregator, at the same concurrency, in one run.
// Part of `npm run bench`; alone (after `npm run build`): `node bench/lib/publisher-phase.mjs [--quick]`.
import { spawn, spawnSync } from "node:child_process"
import { once } from "node:events"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { pathToFileURL } from "node:url"
import pg from "pg"
import { processCpuSeconds, startAggregator } from "./aggregator.mjs"
import { markdownTable } from "./report.mjs"
import { fmt } from "./workloads.mjs"

const env = process.env
const num = (name, fallback) => (env[name] !== undefined && env[name] !== "" ? Number(env[name]) : fallback)

// wrk's requests: new events, and 30% re-sends of one sent before, as the publisher sends them
const WRK_SCRIPT = `
local counter = 0
local prefix = "wrk-" .. tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000))
request = function()
  counter = counter + 1
  local n = counter
  if counter > 10 and math.random() < 0.3 then n = math.random(1, counter - 1) end
  local body = string.format('{"topic":"topic-%d","event_id":"%s-%d","timestamp":"2025-01-01T00:00:00.%06dZ",' ..
    '"source":"wrk","payload":{"n":%d,"user":"user-%d","amount_cents":%d,"tags":["load"]}}',
    n % 5, prefix, n, n % 1000000, n, n % 1000, n * 7 % 100000)
  return wrk.format("POST", "/publish", {["Content-Type"] = "application/json"}, body)
end
`

const hasWrk = () => spawnSync("wrk", ["--version"], { stdio: "ignore" }).error === undefined

const wrkMs = (value, unit) => Number(value) * ({ us: 0.001, ms: 1, s: 1000 }[unit] ?? NaN)

/** wrk against POST /publish; its CPU from bash's `time`, its figures from its own output. */
const runWrk = async ({ url, connections, duration, script }) => {
  const child = spawn("bash", ["-c", `TIMEFORMAT='wrk-cpu %U %S'; time wrk -t1 -c${connections} -d${duration}s --latency -s '${script}' '${url}'`], {
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout.on("data", (d) => (out += d))
  child.stderr.on("data", (d) => (out += d))
  const [code] = await once(child, "exit")
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? NaN)
  const seconds = Number(/requests in ([\d.]+)s/.exec(out)?.[1] ?? NaN)
  const cpu = /wrk-cpu ([\d.]+) ([\d.]+)/.exec(out)
  const latency = (p) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s)`, "m").exec(out)
    return m ? wrkMs(m[1], m[2]) : undefined
  }
  return {
    ok: code === 0 && Number.isFinite(requests),
    output: out,
    requests,
    perSec: requests / seconds,
    non2xx: Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0),
    errors: /Socket errors: (.*)/.exec(out)?.[1],
    p50: latency(50),
    p99: latency(99),
    cpuSeconds: cpu ? Number(cpu[1]) + Number(cpu[2]) : undefined
  }
}

/** `node dist/publisher … --json`: its summary, wall time, CPU (sampled from /proc) and peak RSS. */
const runPublisher = async ({ url, args, outDir, name }) => {
  const t0 = process.hrtime.bigint()
  const child = spawn(process.execPath, ["dist/publisher", "--url", url, "--json", "--progress-interval", "3600", ...args], {
    env: Object.fromEntries(Object.entries(env).filter(([k]) => !["MODE", "EVENTS", "CONCURRENCY", "SEED", "BATCH_SIZE"].includes(k))),
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = "", stderr = ""
  child.stdout.on("data", (d) => (stdout += d))
  child.stderr.on("data", (d) => (stderr += d))
  // CPU and the kernel's peak RSS (VmHWM), read every 50 ms until the process is gone
  let cpuSeconds = 0, hwmKb = 0
  const look = () => {
    try {
      cpuSeconds = processCpuSeconds(child.pid)
      hwmKb = Math.max(hwmKb, Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? 0))
    } catch {
      // exited
    }
  }
  const timer = setInterval(look, 50)
  const [code] = await once(child, "exit")
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  clearInterval(timer)
  writeFileSync(join(outDir, `publisher-${name}.log`), `${stdout}\n${stderr}`)
  let summary
  try {
    summary = JSON.parse(stdout)
  } catch {
    throw new Error(`publisher ${name} printed no summary (exit ${code}):\n${stderr.slice(-2000)}`)
  }
  const events = summary.events
  return {
    code,
    summary,
    wall,
    peakMiB: hwmKb / 1024,
    cpuSeconds,
    sendUsPerEvent: (1e6 * summary.send_cpu_seconds) / events,
    processUsPerEvent: (1e6 * cpuSeconds) / events,
    startup: summary.startup_seconds,
    // from the last answer to the process's exit, seen from outside
    wrapup: wall - summary.startup_seconds - summary.elapsed_seconds
  }
}

/**
 * wrk, then the publisher in single mode for about as many events as wrk answered in the same time, wrk again, then
 * the publisher in batch mode (1,000,000 events; 200,000 with --quick) and with 20,000 events, all against
 * one aggregator on a fresh database, at the same concurrency.
 */
export const publisherPhase = async ({ freshDatabase, start, stop, say, outDir, quick }) => {
  const cfg = {
    concurrency: num("BENCH_PUBLISHER_CONCURRENCY", 32),
    warmup: num("BENCH_WARMUP", 3),
    duration: num("BENCH_DURATION", 12),
    batchEvents: num("BENCH_PUBLISHER_BATCH_EVENTS", quick ? 200_000 : 1_000_000)
  }
  if (!hasWrk()) {
    say("publisher vs wrk: wrk is not installed (apt-get install wrk); phase skipped")
    return { rows: [["publisher vs wrk", "skipped: wrk is not installed", "", "", "", "", ""]], targets: [], checks: [] }
  }
  const script = join(outDir, "publish.lua")
  writeFileSync(script, WRK_SCRIPT)
  const url = await freshDatabase("publisher")
  const agg = await start({ name: "publisher", databaseUrl: url })
  try {
    say(`publisher vs wrk: wrk warm-up ${cfg.warmup} s`)
    await runWrk({ url: agg.url, connections: cfg.concurrency, duration: cfg.warmup, script })
    say(`publisher vs wrk: wrk ${cfg.duration} s, ${cfg.concurrency} connections`)
    const wrk = await runWrk({ url: agg.url, connections: cfg.concurrency, duration: cfg.duration, script })
    if (!wrk.ok) throw new Error(`wrk failed:\n${wrk.output}`)
    say(`  ${fmt(wrk.perSec)} requests/s, ${fmt((1e6 * wrk.cpuSeconds) / wrk.requests)} µs of wrk CPU a request`)

    const singleEvents = Math.max(5_000, Math.round((wrk.perSec * cfg.duration) / 1000) * 1000)
    say(`publisher vs wrk: publisher single mode, ${fmt(singleEvents)} events, concurrency ${cfg.concurrency}`)
    const single = await runPublisher({
      url: agg.url,
      outDir,
      name: "single",
      args: ["--events", String(singleEvents), "--concurrency", String(cfg.concurrency)]
    })
    say(`  ${fmt(single.summary.events_per_second)} events/s, ${fmt(single.sendUsPerEvent, 1)} µs of CPU an event while sending`)
    // wrk again: the server's pace drifts (warm-up, the machine's other work); the publisher is set against both
    say(`publisher vs wrk: wrk again, ${cfg.duration} s`)
    const wrkAfter = await runWrk({ url: agg.url, connections: cfg.concurrency, duration: cfg.duration, script })
    if (!wrkAfter.ok) throw new Error(`wrk failed:\n${wrkAfter.output}`)
    say(`  ${fmt(wrkAfter.perSec)} requests/s`)

    say(`publisher: batch mode, ${fmt(cfg.batchEvents)} events`)
    const batch = await runPublisher({
      url: agg.url,
      outDir,
      name: "batch",
      args: ["--mode", "batch", "--events", String(cfg.batchEvents), "--concurrency", String(cfg.concurrency)]
    })
    say(`  ${fmt(batch.summary.events_per_second)} events/s, ${fmt(batch.sendUsPerEvent, 1)} µs an event, peak RSS ${fmt(batch.peakMiB)} MiB`)

    say("publisher: batch mode, 20,000 events (start-up and wrap-up)")
    const small = await runPublisher({
      url: agg.url,
      outDir,
      name: "batch-20k",
      args: ["--mode", "batch", "--events", "20000", "--concurrency", String(cfg.concurrency)]
    })
    say(`  start-up ${small.startup.toFixed(2)} s, wrap-up ${small.wrapup.toFixed(2)} s, peak RSS ${fmt(small.peakMiB)} MiB`)

    const verified = (r) => r.code === 0 && r.summary.ok === true
    const checkText = (r) =>
      `${verified(r) ? "verified ✓" : "NOT verified ✗"} (${fmt(r.summary.verification?.new_keys ?? 0)} new keys); ` +
      `start-up ${r.startup.toFixed(2)} s, wrap-up ${r.wrapup.toFixed(2)} s; peak RSS ${fmt(r.peakMiB)} MiB`
    const cpuText = (r) =>
      `publisher ${fmt(r.sendUsPerEvent, 1)} µs/event sending, ${fmt(r.processUsPerEvent, 1)} µs/event whole process`
    const ms = (x) => (x === undefined ? "—" : `${fmt(x, x < 10 ? 2 : 1)} ms`)
    const wrkMean = (wrk.perSec + wrkAfter.perSec) / 2
    const ratio = single.summary.events_per_second / wrkMean
    const wrkRow = (w, when) => [
      `wrk POST /publish, 30% re-sends (${cfg.concurrency} conn, ${cfg.duration} s, one thread), ${when} the publisher`,
      `${fmt(w.perSec)} events/s`,
      ms(w.p50),
      ms(w.p99),
      `${fmt(w.non2xx)}${w.errors ? `; socket errors ${w.errors}` : ""}`,
      `wrk ${fmt((1e6 * w.cpuSeconds) / w.requests, 1)} µs/request`,
      "the reference for the publisher's single mode: their mean"
    ]
    const rows = [
      wrkRow(wrk, "before"),
      wrkRow(wrkAfter, "after"),
      [
        `publisher --events ${fmt(singleEvents)} (single, concurrency ${cfg.concurrency}), same aggregator`,
        `${fmt(single.summary.events_per_second)} events/s (${(100 * ratio).toFixed(0)}% of wrk's mean)`,
        ms(single.summary.latency_ms?.p50),
        ms(single.summary.latency_ms?.p99),
        `${fmt(single.summary.failed + single.summary.rejected)} (${fmt(single.summary.retries)} retries)`,
        cpuText(single),
        checkText(single)
      ],
      [
        `publisher --mode batch --events ${fmt(cfg.batchEvents)} (batches of 500, concurrency ${cfg.concurrency})`,
        `${fmt(batch.summary.events_per_second)} events/s`,
        ms(batch.summary.latency_ms?.p50),
        ms(batch.summary.latency_ms?.p99),
        `${fmt(batch.summary.failed + batch.summary.rejected)} (${fmt(batch.summary.retries)} retries)`,
        cpuText(batch),
        checkText(batch)
      ],
      [
        `publisher --mode batch --events 20,000`,
        `${fmt(small.summary.events_per_second)} events/s`,
        ms(small.summary.latency_ms?.p50),
        ms(small.summary.latency_ms?.p99),
        `${fmt(small.summary.failed + small.summary.rejected)} (${fmt(small.summary.retries)} retries)`,
        cpuText(small),
        checkText(small)
      ]
    ]
    const targets = [
      ["publisher single mode CPU ≤ 100 µs an event (sending)", single.sendUsPerEvent <= 100, `${fmt(single.sendUsPerEvent, 1)} µs`],
      ["publisher single mode ≥ 0.8× wrk's events/s (the mean of wrk before and after)", ratio >= 0.8, `${ratio.toFixed(2)}×`],
      ["publisher batch mode CPU ≤ 10 µs an event (sending)", batch.sendUsPerEvent <= 10, `${fmt(batch.sendUsPerEvent, 1)} µs`],
      [
        `publisher batch ${fmt(cfg.batchEvents)} events verified, peak RSS ≤ 150 MiB${cfg.batchEvents === 1_000_000 ? "" : " (NOT MET AS STATED: not 1,000,000 events)"}`,
        verified(batch) && batch.peakMiB <= 150,
        `${fmt(batch.peakMiB)} MiB`
      ],
      ["publisher start-up ≤ 1 s (20,000 events)", small.startup <= 1, `${small.startup.toFixed(2)} s`],
      ["publisher wrap-up with verification ≤ 1 s (20,000 events)", small.wrapup <= 1, `${small.wrapup.toFixed(2)} s`]
    ]
    return { rows, targets, checks: [verified(single), verified(batch), verified(small)], wrk, wrkAfter, single, batch, small }
  } finally {
    await stop(agg)
  }
}

// alone: one fresh database and aggregator, this phase, the table on stdout
if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const adminUrl = env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
  const outDir = env.BENCH_OUT_DIR ?? join(os.tmpdir(), `log-aggregator-publisher-${Date.now()}`)
  mkdirSync(outDir, { recursive: true })
  const say = (msg) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`)
  const admin = async (sql) => {
    const client = new pg.Client({ connectionString: adminUrl })
    await client.connect()
    try {
      await client.query(sql)
    } finally {
      await client.end()
    }
  }
  const names = []
  const freshDatabase = async (suffix) => {
    const name = `bench_pub_${process.pid}_${suffix}`
    await admin(`CREATE DATABASE ${name}`)
    names.push(name)
    const u = new URL(adminUrl)
    u.pathname = `/${name}`
    return u.toString()
  }
  const started = []
  const start = async (opts) => {
    const agg = await startAggregator({ outDir, ...opts })
    started.push(agg)
    return agg
  }
  try {
    const phase = await publisherPhase({
      freshDatabase,
      start,
      stop: (agg) => agg.stop(),
      say,
      outDir,
      quick: process.argv.includes("--quick")
    })
    const rows = [...phase.rows, ...phase.targets.map(([what, pass, value]) => [`target: ${what}`, `${pass ? "PASS" : "MISS"} (${value})`, "", "", "", "", ""])]
    console.log(markdownTable(["measurement", "result", "p50", "p99", "non-2xx", "CPU", "check"], rows))
    if (phase.checks.some((ok) => !ok)) process.exitCode = 1
  } finally {
    for (const agg of started) await agg.stop().catch(() => {})
    for (const name of names) await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {})
  }
}
