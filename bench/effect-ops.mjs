// Effect run-loop steps and fibers a request, for the aggregator and for the smallest HttpApi app, counted (not
// timed) so the figures hold on a loaded machine:
//   node bench/effect-ops.mjs            (needs a built dist/ and the local PostgreSQL; N and IN_FLIGHT: requests, concurrency)
// For each program: a warm-up of N requests, then N more with the counters read before and after.
import { spawn } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import { fileURLToPath } from "node:url"
import pg from "pg"

const N = Number(process.env.N ?? 2000)
const IN_FLIGHT = Number(process.env.IN_FLIGHT ?? 16)
const root = fileURLToPath(new URL("..", import.meta.url))
const adminUrl = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const counted = async (name, args, env, requests) => {
  const port = 20000 + Math.floor(Math.random() * 20000)
  const file = `/tmp/effect-ops-${process.pid}-${name.replace(/\W/g, "")}.jsonl`
  const child = spawn(process.execPath, ["--import", `${root}bench/lib/count-ops.mjs`, ...args], {
    cwd: root,
    env: { ...process.env, ...env, COUNT_ROOT: root.replace(/\/$/, ""), COUNT_FILE: file, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "warn" },
    stdio: ["ignore", "ignore", "inherit"]
  })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    try {
      const r = await fetch(`${url}/`)
      await r.arrayBuffer()
      if (r.ok) break
    } catch {
      if (i > 300) throw new Error(`${name} did not start`)
    }
    await sleep(100)
  }
  const snap = async () => {
    child.kill("SIGUSR2")
    await sleep(300)
    const lines = readFileSync(file, "utf8").trim().split("\n")
    return JSON.parse(lines[lines.length - 1])
  }
  const run = async (make) => {
    let i = 0
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      while (i < N) {
        const { path, init } = make(i++)
        const r = await fetch(url + path, init)
        await r.arrayBuffer()
      }
    }))
  }
  const rows = []
  for (const [label, make] of requests) {
    await run(make)
    const before = await snap()
    await run(make)
    const after = await snap()
    rows.push(`| ${name} | ${label} | ${((after.ops - before.ops) / N).toFixed(1)} | ${((after.fibers - before.fibers) / N).toFixed(2)} |`)
  }
  child.kill()
  rmSync(file, { force: true })
  return rows
}

let k = 0
const get = ["GET /", () => ({ path: "/" })]
const publish = ["POST /publish (new event, 30% re-sends)", (i) => ({
  path: "/publish",
  init: {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic: "ops", event_id: `e-${k++ % 7000}`, timestamp: "2026-11-30T08:00:00Z", source: "bench", payload: { i } })
  }
})]

const db = `effect_ops_${process.pid}`
const admin = new pg.Client({ connectionString: adminUrl })
await admin.connect()
await admin.query(`CREATE DATABASE ${db}`)
try {
  const url = new URL(adminUrl)
  url.pathname = `/${db}`
  const rows = [
    ...await counted("smallest HttpApi app", ["bench/reference/minimal-httpapi.mjs"], {}, [get]),
    // the unbundled entry: the counters patch node_modules/effect, which the bundle (dist/aggregator) has its own copy of
    ...await counted("aggregator", ["dist/aggregator/main.js"], { DATABASE_URL: url.toString() }, [get, publish])
  ]
  console.log(`${new Date().toISOString()} · ${N} requests each, ${IN_FLIGHT} in flight\n`)
  console.log("| program | request | Effect run-loop steps a request | fibers a request |\n| --- | --- | --- | --- |")
  for (const row of rows) console.log(row)
} finally {
  await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
  await admin.end()
}
