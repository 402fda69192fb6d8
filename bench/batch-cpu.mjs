// Batch ingest only, for working on its CPU an event and memory: `node bench/batch-cpu.mjs [dir…]` runs, for each
// built directory (default .), a fresh aggregator on a fresh database, then BENCH_BATCH_REQUESTS (default 300)
// requests of 1,000 events on 4 connections, and prints events/s, the aggregator's CPU an event and its peak RSS.
// BENCH_PROFILE=1 writes a .cpuprofile per run (read it with bench/profile-summary.mjs). The full bench measures
// the same with 1,000 requests.
import { mkdtempSync } from "node:fs"
import os from "node:os"
import { join, resolve } from "node:path"
import { query } from "./lib/db.mjs"
import { measureCpu, sampleRss, startAggregator } from "./lib/aggregator.mjs"
import { batch, fmt } from "./lib/workloads.mjs"

const dirs = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["."]
const requests = Number(process.env.BENCH_BATCH_REQUESTS ?? 300)
const rounds = Number(process.env.BENCH_ROUNDS ?? 1)
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const outDir = mkdtempSync(join(os.tmpdir(), "bench-batch-"))
const admin = (sql) => query(adminUrl, sql)
for (let round = 1; round <= rounds; round++) {
  for (const dir of round % 2 === 1 ? dirs : [...dirs].reverse()) {
    const db = `bench_batch_${process.pid}_${round}_${dirs.indexOf(dir)}`
    await admin(`CREATE DATABASE ${db}`)
    const url = new URL(adminUrl)
    url.pathname = `/${db}`
    const agg = await startAggregator({ name: `batch-${round}-${dirs.indexOf(dir)}`, databaseUrl: url.toString(), outDir, cwd: resolve(dir), profile: process.env.BENCH_PROFILE === "1" })
    try {
      await batch({ url: agg.url, topic: "warm", prefix: "w", connections: 4, amount: 20, batchSize: 1000 })
      const rss = sampleRss(agg.pid, 100)
      const { result, cpu, wall } = await measureCpu(agg.pid, () =>
        batch({ url: agg.url, topic: "batch", connections: 4, amount: requests, batchSize: 1000 }))
      const mem = rss.stop()
      console.log(`round ${round} ${dir}: ${fmt(result.eventsPerSec)} events/s, ${(cpu.aggregator * wall * 1e6 / result.processed).toFixed(1)} µs CPU an event, ` +
        `PostgreSQL ${(cpu.postgres * 100).toFixed(0)}% of a core, peak RSS ${fmt(mem.hwmKb / 1024)} MiB`)
    } finally {
      await agg.stop()
      await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
    }
  }
}
console.log(`profiles and logs: ${outDir}`)
