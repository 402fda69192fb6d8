// Batch mode of the publisher only, A/B in alternating rounds against one aggregator on a fresh database (after
// `npm run build`): `node bench/publisher-batch.mjs <rounds> <events> "label|<publisher dir>|<flags>" …`, e.g.
//   node bench/publisher-batch.mjs 2 1000000 "library|dist/publisher|" "send loop|dist/publisher|--send-loop"
// prints per run the publisher's CPU an event while sending (its --json summary), its peak RSS (VmHWM every 50 ms,
// as bench/lib/publisher-phase.mjs reads it), start-up and wrap-up. STANDIN=<url> runs against that server instead
// (with --no-verify), e.g. a node:http stand-in answering every batch at once.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { readFileSync, mkdtempSync } from "node:fs"
import { join } from "node:path"
import os from "node:os"
import { query } from "./lib/db.mjs"
import { startAggregator } from "./lib/aggregator.mjs"

const [rounds, events, ...variants] = process.argv.slice(2)
const vs = variants.map((v) => { const [label, dir, flags] = v.split("|"); return { label, dir, flags: flags ? flags.split(" ").filter(Boolean) : [] } })
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const admin = (sql) => query(adminUrl, sql)
const url = process.env.STANDIN ?? null
const run = async (v) => {
  const t0 = process.hrtime.bigint()
  const child = spawn(process.execPath, [v.dir, "--url", target, "--json", "--progress-interval", "3600", "--mode", "batch", "--events", events, "--concurrency", "32", ...(process.env.STANDIN ? ["--no-verify"] : []), ...v.flags], { stdio: ["ignore", "pipe", "pipe"] })
  let out = "", err = ""
  child.stdout.on("data", (d) => out += d); child.stderr.on("data", (d) => err += d)
  let hwm = 0
  const t = setInterval(() => { try { hwm = Math.max(hwm, Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${child.pid}/status`, "utf8"))?.[1] ?? 0)) } catch {} }, 50)
  const [code] = await once(child, "exit"); clearInterval(t)
  const wall = Number(process.hrtime.bigint() - t0) / 1e9
  let s; try { s = JSON.parse(out) } catch { console.log(`${v.label}: no summary, exit ${code}\n${err.slice(-1500)}`); return }
  console.log(`${v.label}: exit ${code} ok=${s.ok} ${(1e6 * s.send_cpu_seconds / s.events).toFixed(2)} µs/event sending, peak ${(hwm / 1024).toFixed(0)} MiB, ${Math.round(s.events_per_second)} ev/s, startup ${s.startup_seconds.toFixed(2)} s, wrapup ${(wall - s.startup_seconds - s.elapsed_seconds).toFixed(2)} s (summary wrapup ${s.wrapup_seconds?.toFixed?.(2)}), load ${os.loadavg()[0].toFixed(1)}`)
}
let target = url, agg, db
if (!url) {
  db = `bench_publisher_batch_${process.pid}`
  await admin(`CREATE DATABASE ${db}`)
  const outDir = mkdtempSync(join(os.tmpdir(), "bench-publisher-batch-"))
  const dbUrl = new URL(adminUrl)
  dbUrl.pathname = `/${db}`
  agg = await startAggregator({ name: "publisher-batch", databaseUrl: dbUrl.toString(), outDir })
  target = agg.url
}
try {
  for (let r = 1; r <= Number(rounds); r++) for (const v of r % 2 === 1 ? vs : [...vs].reverse()) await run(v)
} finally {
  if (agg) { await agg.stop(); await admin(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`) }
}
