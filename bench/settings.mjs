// A/B of settings: one build of the aggregator under several environments (and optionally the naive reference),
// alternating, in one run on one machine, under the single-event load of bench/compare.mjs.
//
//   node bench/settings.mjs <dir> <rounds> <variant>…
//
// A variant is `naive` (bench/reference/naive-server.mjs) or a comma-separated list of NAME=value settings for the
// aggregator (`-` for none), e.g.
//   node bench/settings.mjs . 3 naive FLUSH_OVERLAP_EVENTS=1000 FLUSH_OVERLAP_EVENTS=16 FLUSH_OVERLAP_EVENTS=8
// Each run: a fresh database and process, a 3 s warm-up, BENCH_DURATION (8) seconds of 64 connections with 30%
// re-sends. Prints events/s, the aggregator's CPU an event (its CPU time over the phase ÷ 2xx answers), the whole
// machine's CPU (from /proc/stat), events a commit and the mean commit time (from /metrics, warm-up included), and
// checks the stored rows against the 201s. PROFILE=1 writes a .cpuprofile per aggregator run.
import { mkdtempSync, readFileSync } from "node:fs"
import os from "node:os"
import { join, resolve } from "node:path"
import { query } from "./lib/db.mjs"
import { measureCpu, startAggregator, startNaiveReference } from "./lib/aggregator.mjs"
import { fmt, singleEvent } from "./lib/workloads.mjs"

const [dir, rounds, ...variants] = process.argv.slice(2)
if (dir === undefined || !(Number(rounds) > 0) || variants.length === 0) {
  console.error("usage: node bench/settings.mjs <dir> <rounds> <naive | NAME=value,…>…")
  process.exit(2)
}
const duration = Number(process.env.BENCH_DURATION ?? 8)
const vs = variants.map((v) => [v, v === "naive" ? undefined : Object.fromEntries(v.split(",").filter((kv) => kv !== "-" && kv !== "").map((kv) => kv.split("=")))])
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const outDir = mkdtempSync(join(os.tmpdir(), "bench-settings-"))
// busy and total jiffies of the whole machine
const machine = () => {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0].split(/\s+/).slice(1).map(Number)
  return [f[0] + f[1] + f[2] + f[5] + f[6], f.reduce((a, b) => a + b, 0)]
}
const metric = (text, name) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+-]+)`, "m").exec(text)?.[1])
let failed = false
console.log(`${new Date().toISOString()} · ${dir} · ${rounds} rounds × ${duration} s, 64 connections, 30% re-sends · profiles and logs: ${outDir}`)
for (let round = 1; round <= Number(rounds); round++) {
  for (const [name, env] of round % 2 === 1 ? vs : [...vs].reverse()) {
    const db = `bench_settings_${process.pid}_${round}_${vs.findIndex((x) => x[0] === name)}`
    await query(adminUrl, `CREATE DATABASE ${db}`)
    const url = new URL(adminUrl)
    url.pathname = `/${db}`
    const agg = env === undefined
      ? await startNaiveReference({ databaseUrl: url.toString() })
      : await startAggregator({ name: `${round}-${db}`, databaseUrl: url.toString(), outDir, cwd: resolve(dir), env, profile: process.env.PROFILE === "1" })
    try {
      await singleEvent({ url: agg.url, topic: "warmup", prefix: "w", connections: 64, duration: 3, dupShare: 0.3 })
      const [busy0, total0] = machine()
      const m = await measureCpu(agg.pid, () => singleEvent({ url: agg.url, topic: "bench", prefix: "e", connections: 64, duration, dupShare: 0.3 }))
      const [busy1, total1] = machine()
      const ids = (await query(url.toString(), "SELECT event_id FROM events WHERE topic = 'bench'")).rows.map((r) => r.event_id)
      const check = m.result.verify(ids)
      if (!check.ok) failed = true
      let commits = ""
      if (env !== undefined) {
        const t = await (await fetch(`${agg.url}/metrics`)).text()
        const count = metric(t, "aggregator_commit_duration_seconds_count")
        commits = `, ${(metric(t, "aggregator_batch_size_events_sum") / metric(t, "aggregator_batch_size_events_count")).toFixed(1)} events a commit, ` +
          `commit ${(1000 * metric(t, "aggregator_commit_duration_seconds_sum") / count).toFixed(2)} ms`
      }
      console.log(`round ${round} ${name}: ${fmt(m.result.eventsPerSec)} events/s, p99 ${m.result.p99} ms, ` +
        `${fmt(m.cpu.aggregator * m.wall * 1e6 / m.result.ok)} µs CPU an event, machine ${(200 * (busy1 - busy0) / (total1 - total0)).toFixed(0)}%` +
        `${commits}; ${check.text}`)
    } finally {
      await agg.stop()
      await query(adminUrl, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
    }
  }
}
process.exit(failed ? 1 : 0)
