#!/usr/bin/env node
// node bench/hostile.mjs tail|listing [--dist dist/aggregator]: the read side under hostile load (issue 15).
//   tail:    8 batches of 1,000 events (600-byte payloads) with 0 and with TAIL_CLIENTS (300) live-tail
//            clients reading; time to store them, GET / latency meanwhile, announcements failed, and
//            when every reader had every event.
//   listing: 1,000 events of 65,000-byte payloads in one topic, then 4 clients fetching
//            GET /events?topic=…&limit=1000 over and over; GET / latency meanwhile, peak RSS.
//            PROBE_APART=1 probes GET / from a child process, so the latency is not this process's own
//            event loop reading the listings.
// AGGREGATOR_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/p" passes node flags to the aggregator (e.g. to profile it).
// Runs the built aggregator against the local PostgreSQL (BENCH_DATABASE_URL) on a fresh database it drops.
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import net from "node:net"
import { query } from "./lib/db.mjs"

const env = process.env
const mode = process.argv[2]
const distArg = process.argv.indexOf("--dist")
const dist = distArg > 0 ? process.argv[distArg + 1] : "dist/aggregator"
const adminUrl = env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const say = (m) => console.error(`[hostile ${new Date().toISOString().slice(11, 19)}] ${m}`)

const admin = async (sql) => {
  await query(adminUrl, sql)
}

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })

const cpuSeconds = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100
}
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) / 1024

const start = async (extraEnv = {}) => {
  const name = `la_hostile_${process.pid}_${Date.now().toString(36)}`
  await admin(`CREATE DATABASE ${name}`)
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  const port = await freePort()
  const nodeArgs = (env.AGGREGATOR_NODE_ARGS ?? "").split(" ").filter((a) => a !== "")
  const child = spawn(process.execPath, [...nodeArgs, dist], {
    env: { ...env, DATABASE_URL: u.toString(), PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "Warn", ...extraEnv },
    stdio: ["ignore", "ignore", "inherit"]
  })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${url}/ready`)).status === 200) break
    } catch {}
    if (i > 300) throw new Error("aggregator did not get ready")
    await new Promise((r) => setTimeout(r, 100))
  }
  return {
    url,
    pid: child.pid,
    stop: async () => {
      child.kill("SIGTERM")
      await new Promise((r) => child.on("exit", r))
      await admin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    }
  }
}

/** Probes GET / every 50 ms until stopped; answers the latencies in ms. */
const probe = (url) => {
  const latencies = []
  let on = true
  const done = (async () => {
    while (on) {
      const t = performance.now()
      await fetch(`${url}/`).then((r) => r.arrayBuffer())
      latencies.push(performance.now() - t)
      await new Promise((r) => setTimeout(r, 50))
    }
  })()
  return async () => {
    on = false
    await done
    const sorted = [...latencies].sort((a, b) => a - b)
    const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
    return { n: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] }
  }
}

/**
 * The same probe in a child process, so what the latencies measure is the aggregator, not this process's
 * own event loop (busy reading the listings' hundreds of MiB). Answers a function that stops it and answers
 * the latencies.
 */
const probeApart = (url) => {
  const child = spawn(process.execPath, [process.argv[1], "probe", url], { stdio: ["pipe", "pipe", "inherit"] })
  let out = ""
  child.stdout.on("data", (d) => (out += d))
  const exited = new Promise((r) => child.on("exit", r))
  return async () => {
    child.stdin.end()
    await exited
    return JSON.parse(out)
  }
}

const fmtLat = (l) => `GET / n=${l.n} p50 ${l.p50.toFixed(1)} ms, p99 ${l.p99.toFixed(1)} ms, max ${l.max.toFixed(1)} ms`

// ---- readers: a child process holding N raw live-tail connections, discarding what it reads ----------

if (mode === "probe") {
  const stop = probe(process.argv[3])
  process.stdin.resume()
  process.stdin.on("end", async () => {
    process.stdout.write(JSON.stringify(await stop()))
    process.exit(0)
  })
} else if (mode === "readers") {
  const [port, n] = [Number(process.argv[3]), Number(process.argv[4])]
  let bytes = 0
  let refused = 0
  let frames = 0
  const marker = Buffer.from("\ndata: ")
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, "127.0.0.1", () => s.write("GET /events/stream HTTP/1.1\r\nHost: b\r\n\r\n"))
    let first = true
    let tail = Buffer.alloc(0)
    s.on("data", (d) => {
      if (first && !d.toString("latin1", 0, 12).includes(" 200")) refused++
      first = false
      bytes += d.length
      // each event's frame has one "\ndata: ", which may straddle two reads
      // (the tail keeps one byte less than the marker, so a marker counted whole is not counted again)
      const seam = Buffer.concat([tail, d.subarray(0, marker.length - 1)])
      if (seam.indexOf(marker) >= 0) frames++
      for (let at = d.indexOf(marker); at >= 0; at = d.indexOf(marker, at + 1)) frames++
      tail = Buffer.from(d.subarray(Math.max(0, d.length - (marker.length - 1))))
    })
    s.on("error", () => {})
  }
  setInterval(() => process.stdout.write(JSON.stringify({ bytes, refused, frames }) + "\n"), 100)
} else if (mode === "tail") {
  const clients = Number(env.TAIL_CLIENTS ?? 300)
  const payload = { text: "x".repeat(588) }
  const runOnce = async (readers) => {
    const agg = await start()
    let reader
    let received = { frames: 0 }
    if (readers > 0) {
      reader = spawn(process.execPath, [process.argv[1], "readers", new URL(agg.url).port, String(readers)], { stdio: ["ignore", "pipe", "inherit"] })
      reader.stdout.setEncoding("utf8")
      let partial = ""
      reader.stdout.on("data", (d) => {
        const lines = (partial + d).split("\n")
        partial = lines.pop()
        if (lines.length > 0) received = JSON.parse(lines[lines.length - 1])
      })
      for (;;) {
        const s = await fetch(`${agg.url}/stats`).then((r) => r.json())
        if (s.stream_clients >= readers) break
        await new Promise((r) => setTimeout(r, 100))
      }
    }
    const stop = probe(agg.url)
    const cpu0 = cpuSeconds(agg.pid)
    const t0 = performance.now()
    for (let b = 0; b < 8; b++) {
      const events = Array.from({ length: 1000 }, (_, i) => ({
        topic: "tail",
        event_id: `b${b}-${i}`,
        timestamp: "2026-01-01T00:00:00Z",
        payload
      }))
      const res = await fetch(`${agg.url}/publish/batch`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(events)
      })
      const body = await res.json()
      if (res.status !== 200 || body.processed !== 1000) throw new Error(`batch ${b}: ${res.status} ${JSON.stringify(body).slice(0, 200)}`)
    }
    const seconds = (performance.now() - t0) / 1000
    const cpu = cpuSeconds(agg.pid) - cpu0
    const latency = await stop()
    // until every reader has every event (or 60 s): the fan-out may go on after the last batch is stored
    while (readers > 0 && received.frames < readers * 8000 && performance.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 20))
    const delivered = (performance.now() - t0) / 1000
    const cpuDelivered = cpuSeconds(agg.pid) - cpu0
    await new Promise((r) => setTimeout(r, 1000))
    const stats = await fetch(`${agg.url}/stats`).then((r) => r.json())
    reader?.kill()
    await agg.stop()
    const deliveredText = readers > 0
      ? `; ${received.frames.toLocaleString("en")} of ${(readers * 8000).toLocaleString("en")} frames delivered in ${delivered.toFixed(2)} s (CPU ${(cpuDelivered * 1e6 / 8000).toFixed(0)} µs/event until then)`
      : ""
    const line = `${readers} readers: 8,000 events in ${seconds.toFixed(2)} s; aggregator CPU ${(cpu * 1e6 / 8000).toFixed(0)} µs/event; ${fmtLat(latency)}; announcements ${JSON.stringify(stats.announcements)}; stream_clients ${stats.stream_clients}${deliveredText}`
    say(line)
    return { readers, seconds, latency, stats, delivered, frames: received.frames }
  }
  const none = await runOnce(0)
  const many = await runOnce(clients)
  console.log(JSON.stringify({
    none: none.seconds,
    many: many.seconds,
    ratio: many.seconds / none.seconds,
    failed: many.stats.announcements.failed,
    delivered: many.delivered,
    frames: many.frames
  }))
} else if (mode === "listing") {
  const agg = await start(env.LISTING_ENV ? JSON.parse(env.LISTING_ENV) : {})
  const topic = "big"
  const blob = "y".repeat(64_950)
  for (let b = 0; b < 10; b++) {
    const events = Array.from({ length: 100 }, (_, i) => ({ topic, event_id: `e${b}-${i}`, timestamp: "2026-01-01T00:00:00Z", payload: { blob } }))
    // batches are limited to MAX_BODY_BYTES (1 MiB): 15 events a request
    for (let i = 0; i < events.length; i += 15) {
      const res = await fetch(`${agg.url}/publish/batch`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(events.slice(i, i + 15)) })
      if (res.status !== 200) throw new Error(`seed: ${res.status} ${await res.text()}`)
    }
  }
  say("seeded 1,000 events of ~65 KB")
  // GET / alone first, in the same run, as the yardstick for the machine's load
  const apart = env.PROBE_APART === "1"
  const idle = (apart ? probeApart : probe)(agg.url)
  await new Promise((r) => setTimeout(r, 5000))
  const idleLatency = await idle()
  say(`idle: ${fmtLat(idleLatency)}`)
  const baseline = rssMiB(agg.pid)
  let peak = baseline
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(agg.pid))), 100)
  const stop = (apart ? probeApart : probe)(agg.url)
  const cpu0 = cpuSeconds(agg.pid)
  const t0 = performance.now()
  let bytes = 0
  let pages = 0
  const fetchAll = async () => {
    // follow the cursor to the end, as a client reading the whole topic would
    let before
    for (;;) {
      const res = await fetch(`${agg.url}/events?topic=${topic}&limit=1000${before ? `&before=${before}` : ""}`)
      const text = await res.text()
      bytes += text.length
      pages++
      const next = res.headers.get("x-next-before")
      if (next === null) return JSON.parse(text).length
      before = next
    }
  }
  const rounds = Number(env.LISTING_ROUNDS ?? 3)
  const counts = []
  await Promise.all(Array.from({ length: 4 }, async () => {
    for (let r = 0; r < rounds; r++) counts.push(await fetchAll())
  }))
  const seconds = (performance.now() - t0) / 1000
  const cpu = cpuSeconds(agg.pid) - cpu0
  const latency = await stop()
  clearInterval(sampler)
  const head = await fetch(`${agg.url}/events?topic=${topic}&limit=1000`, { method: "HEAD" })
  say(`4 clients × ${rounds} full listings: ${pages} responses, ${(bytes / 2 ** 20).toFixed(0)} MiB in ${seconds.toFixed(1)} s (aggregator CPU ${cpu.toFixed(1)} s); ${fmtLat(latency)}; RSS ${baseline.toFixed(0)} → peak ${peak.toFixed(0)} MiB; HEAD ${head.status} next ${head.headers.get("x-next-before")}`)
  await agg.stop()
  console.log(JSON.stringify({ idleP99: idleLatency.p99, p99: latency.p99, max: latency.max, peakRss: peak, pages, seconds, cpu }))
} else {
  console.error("usage: node bench/hostile.mjs tail|listing [--dist dist/aggregator]")
  process.exit(2)
}
