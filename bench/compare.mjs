// A/B: the same load against two builds of the aggregator, alternating, in one run on one machine.
//
//   node bench/compare.mjs <before-dir> [<after-dir>=.] [--naive]
//
// --naive also runs the naive reference server (bench/reference/naive-server.mjs) in every round under the same
// single-event load, and prints each build's events/s as a ratio of it (issue 12's target, read in one run).
//
// Each directory must hold a built `dist/aggregator` (and its node_modules). For each round and each build:
// a fresh database, a fresh aggregator, a warm-up, then single-event `POST /publish` (64 connections, 30%
// re-sends) and `GET /`, each for BENCH_DURATION seconds. Prints events/s and req/s per round and the
// after/before ratio of the medians, and the aggregator CPU an event (its CPU time over the phase ÷ 2xx answers). Rows stored are checked against the 201s, as in bench/run.mjs.
import { mkdtempSync } from "node:fs"
import os from "node:os"
import { join, resolve } from "node:path"
import { query } from "./lib/db.mjs"
import { measureCpu, startAggregator, startNaiveReference } from "./lib/aggregator.mjs"
import { markdownTable } from "./lib/report.mjs"
import { fmt, getLoad, singleEvent } from "./lib/workloads.mjs"

const withNaive = process.argv.includes("--naive")
const [beforeDir, afterDir = "."] = process.argv.slice(2).filter((a) => a !== "--naive")
if (beforeDir === undefined) {
  console.error("usage: node bench/compare.mjs <before-dir> [<after-dir>]")
  process.exit(2)
}
const num = (name, fallback) => (process.env[name] === undefined ? fallback : Number(process.env[name]))
const cfg = {
  rounds: num("BENCH_ROUNDS", 3),
  duration: num("BENCH_DURATION", 10),
  warmup: num("BENCH_WARMUP", 3),
  connections: num("BENCH_CONNECTIONS", 64),
  dupShare: num("BENCH_DUP_SHARE", 0.3)
}
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const outDir = mkdtempSync(join(os.tmpdir(), "bench-compare-"))
const builds = [["before", resolve(beforeDir)], ["after", resolve(afterDir)], ...(withNaive ? [["naive", undefined]] : [])]

const admin = (sql) => query(adminUrl, sql)

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

const results = Object.fromEntries(builds.map(([name]) => [name, { publish: [], alive: [], publishCpu: [], aliveCpu: [] }]))
// the aggregator's CPU time over the phase ÷ the 2xx answers in it, in µs
const cpuPer = (m) => (m.cpu.aggregator * m.wall * 1e6) / m.result.ok
const rows = []
let failed = false
for (let round = 1; round <= cfg.rounds; round++) {
  // alternate which build goes first, so drift on the machine does not favour one
  const order = round % 2 === 1 ? builds : [...builds].reverse()
  for (const [name, dir] of order) {
    const db = `bench_cmp_${process.pid}_${round}_${name}`
    const url = new URL(adminUrl)
    url.pathname = `/${db}`
    await admin(`CREATE DATABASE ${db}`)
    let agg
    try {
      agg = dir === undefined
        ? await startNaiveReference({ databaseUrl: url.toString() })
        : await startAggregator({ name: `${name}-${round}`, databaseUrl: url.toString(), outDir, cwd: dir })
      await singleEvent({ url: agg.url, topic: "warmup", prefix: "w", connections: cfg.connections, duration: cfg.warmup, dupShare: cfg.dupShare })
      const measured = await measureCpu(agg.pid, () =>
        singleEvent({ url: agg.url, topic: "bench", prefix: "e", connections: cfg.connections, duration: cfg.duration, dupShare: cfg.dupShare })
      )
      const load = measured.result
      const ids = (await query(url.toString(), "SELECT event_id FROM events WHERE topic = 'bench'")).rows.map((r) => r.event_id)
      const check = load.verify(ids)
      if (!check.ok) failed = true
      results[name].publish.push(load.eventsPerSec)
      results[name].publishCpu.push(cpuPer(measured))
      // the naive reference answers only POST /publish
      const aliveMeasured = dir === undefined
        ? undefined
        : await measureCpu(agg.pid, () => getLoad({ url: agg.url, path: "/", connections: cfg.connections, duration: cfg.duration }))
      if (aliveMeasured !== undefined) {
        results[name].alive.push(aliveMeasured.result.perSec)
        results[name].aliveCpu.push(cpuPer(aliveMeasured))
      }
      rows.push([
        String(round),
        name,
        fmt(load.eventsPerSec),
        `${fmt(cpuPer(measured))} µs`,
        aliveMeasured === undefined ? "—" : fmt(aliveMeasured.result.perSec),
        aliveMeasured === undefined ? "—" : `${fmt(cpuPer(aliveMeasured))} µs`,
        check.text
      ])
      console.error(`round ${round} ${name}: ${fmt(load.eventsPerSec)} events/s (${fmt(cpuPer(measured))} µs CPU an event)` +
        (aliveMeasured === undefined ? "" : `, GET / ${fmt(aliveMeasured.result.perSec)} req/s`))
    } finally {
      await agg?.stop()
      await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
    }
  }
}

console.log(`\n${new Date().toISOString()} · node ${process.version} · ${os.cpus().length} cores · ${cfg.rounds} rounds × ${cfg.duration} s, ` +
  `${cfg.connections} connections, ${cfg.dupShare * 100}% re-sends\nbefore: ${builds[0][1]}\nafter:  ${builds[1][1]}\n`)
console.log(markdownTable(
  ["round", "build", "POST /publish events/s", "aggregator CPU an event", "GET / req/s", "aggregator CPU a GET /", "stored vs 201s"],
  rows
))
const ratio = (what, to = "before") => median(results.after[what]) / median(results[to][what])
console.log(`\nmedian after/before: POST /publish ${ratio("publish").toFixed(3)} (CPU an event ${ratio("publishCpu").toFixed(3)}), ` +
  `GET / ${ratio("alive").toFixed(3)} (CPU a request ${ratio("aliveCpu").toFixed(3)})`)
if (withNaive) {
  const perRound = results.naive.publish.map((n, i) => `${(results.after.publish[i] / n).toFixed(2)}×`).join(", ")
  console.log(`POST /publish against the naive reference (medians): after ${ratio("publish", "naive").toFixed(2)}× ` +
    `(rounds: ${perRound}), before ${(median(results.before.publish) / median(results.naive.publish)).toFixed(2)}×; ` +
    `naive CPU an event ${fmt(median(results.naive.publishCpu))} µs`)
}
process.exit(failed ? 1 : 0)
