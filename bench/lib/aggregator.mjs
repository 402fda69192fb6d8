// The aggregator under test: `node dist/aggregator` as its own process, plus what /proc says about it.
import { spawn } from "node:child_process"
import { once } from "node:events"
import { openSync, closeSync, readFileSync, readdirSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"

// Variables the bench sets itself; every other aggregator setting (FLUSH_*, DB_POOL_SIZE, …) passes through.
const OWNED = ["DATABASE_URL", "PORT", "HOST", "GROUP_COMMIT", "LOG_LEVEL", "DATA_DIR"]

export const AGGREGATOR_SETTINGS = [
  "GROUP_COMMIT", "FLUSH_WINDOW_MS", "FLUSH_MAX_EVENTS", "FLUSH_CONCURRENCY", "MAX_PENDING_EVENTS", "DB_POOL_SIZE",
  "MAX_BATCH_EVENTS", "MAX_BODY_BYTES", "MAX_PAYLOAD_BYTES", "RETRY_AFTER_SECONDS", "DB_RETRY_MAX_DELAY_MS",
  "SHUTDOWN_TIMEOUT_MS"
]

/** The aggregator settings the caller's environment overrides (they reach every aggregator the bench starts). */
export const settingOverrides = () =>
  AGGREGATOR_SETTINGS.filter((k) => k !== "GROUP_COMMIT" && process.env[k] !== undefined)
    .map((k) => `${k}=${process.env[k]}`)

const freePort = () =>
  new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once("error", reject)
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address()
      srv.close(() => resolve(port))
    })
  })

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

const tail = (file, lines = 30) => {
  try {
    return readFileSync(file, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
  } catch {
    return ""
  }
}

/**
 * Starts the aggregator and waits until `/ready` answers 200 (connected and migrated).
 * `profile` names a .cpuprofile written into `outDir` when the process exits.
 */
export const startAggregator = async ({ name, databaseUrl, env = {}, outDir, profile = false, cwd = process.cwd() }) => {
  const port = await freePort()
  const log = join(outDir, `aggregator-${name}.log`)
  const fd = openSync(log, "a")
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !OWNED.includes(k)))
  const args = profile ? ["--cpu-prof", `--cpu-prof-dir=${outDir}`, `--cpu-prof-name=aggregator-${name}.cpuprofile`] : []
  const child = spawn(process.execPath, [...args, "dist/aggregator"], {
    cwd,
    env: { ...inherited, DATABASE_URL: databaseUrl, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "WARN", ...env },
    stdio: ["ignore", fd, fd]
  })
  closeSync(fd)
  const exited = once(child, "exit").then(([code, signal]) => ({ code, signal }))
  let gone = false
  exited.then(() => (gone = true))
  const url = `http://127.0.0.1:${port}`
  const deadline = Date.now() + 60_000
  for (;;) {
    if (gone) throw new Error(`aggregator ${name} exited before it was ready:\n${tail(log)}`)
    if (Date.now() > deadline) {
      child.kill("SIGKILL")
      throw new Error(`aggregator ${name} not ready after 60 s:\n${tail(log)}`)
    }
    try {
      const res = await fetch(`${url}/ready`)
      await res.arrayBuffer()
      if (res.status === 200) break
    } catch {
      // not listening yet
    }
    await sleep(100)
  }
  const stop = async () => {
    if (gone) return exited
    child.kill("SIGTERM")
    const timer = setTimeout(() => child.kill("SIGKILL"), 30_000)
    const result = await exited
    clearTimeout(timer)
    return result
  }
  return {
    name,
    url,
    pid: child.pid,
    log,
    profileFile: profile ? join(outDir, `aggregator-${name}.cpuprofile`) : undefined,
    stop,
    get alive() {
      return !gone
    }
  }
}

const CLOCK_TICKS = 100 // USER_HZ on Linux

/** utime+stime of a process, in seconds. */
export const processCpuSeconds = (pid) => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
}

/** utime+stime by pid of every process whose command is `postgres` (server and backends). */
const postgresCpu = () => {
  const byPid = new Map()
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))
      if (comm !== "postgres") continue
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      byPid.set(entry, (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS)
    } catch {
      // the process ended while we looked
    }
  }
  return byPid
}

// Backends that exit during the phase take their time with them, so this is a lower bound.
const postgresCpuSince = (before) => {
  let used = 0
  for (const [pid, cpu] of postgresCpu()) used += cpu - (before.get(pid) ?? 0)
  return used
}

/** Busy and total jiffies of the whole machine (all cores). */
const machineJiffies = () => {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number)
  const idle = cpu[3] + (cpu[4] ?? 0)
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

/**
 * CPU used while `fn` runs, as a share of one core: the aggregator, PostgreSQL, this bench process, and
 * the whole machine (all cores, so 200% is a saturated 2-core box).
 */
export const measureCpu = async (pid, fn) => {
  const agg0 = pid ? processCpuSeconds(pid) : 0
  const pg0 = postgresCpu()
  const me0 = process.cpuUsage()
  const m0 = machineJiffies()
  const from = process.hrtime.bigint()
  const result = await fn()
  const to = process.hrtime.bigint()
  const wall = Number(to - from) / 1e9
  const me = process.cpuUsage(me0)
  const m1 = machineJiffies()
  const cores = (m1.total - m0.total) > 0 ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0
  const ncpu = readFileSync("/proc/stat", "utf8").split("\n").filter((l) => /^cpu\d/.test(l)).length
  const cpu = {
    aggregator: pid ? (processCpuSeconds(pid) - agg0) / wall : undefined,
    postgres: postgresCpuSince(pg0) / wall,
    bench: (me.user + me.system) / 1e6 / wall,
    machine: cores * ncpu
  }
  // the window in CLOCK_MONOTONIC microseconds, the clock of V8's .cpuprofile timestamps
  return { result, cpu, wall, window: { from: Number(from / 1000n), to: Number(to / 1000n) } }
}

const statusKb = (pid, field) => {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m ? Number(m[1]) : 0
}

/** Samples VmRSS every `everyMs` until stopped; returns the largest sample and the kernel's VmHWM peak. */
export const sampleRss = (pid, everyMs = 100) => {
  let maxRssKb = 0
  let samples = 0
  const take = () => {
    try {
      maxRssKb = Math.max(maxRssKb, statusKb(pid, "VmRSS"))
      samples++
    } catch {
      // exited
    }
  }
  take()
  const timer = setInterval(take, everyMs)
  return {
    stop: () => {
      clearInterval(timer)
      take()
      let hwmKb = 0
      try {
        hwmKb = statusKb(pid, "VmHWM")
      } catch {
        // exited
      }
      return { maxRssKb, hwmKb, samples }
    }
  }
}

/** Current resident memory of a process, in kB. */
export const rssKb = (pid) => statusKb(pid, "VmRSS")

/** A helper server as its own process that prints its port on its first line; stopped with SIGTERM. */
const startPortPrinter = async (args, env = process.env) => {
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "inherit"] })
  const [line] = await once(child.stdout, "data")
  const exited = once(child, "exit")
  let stopped
  return {
    url: `http://127.0.0.1:${Number(String(line).trim())}`,
    pid: child.pid,
    stop: () => {
      stopped ??= (child.kill("SIGTERM"), exited.then(() => undefined))
      return stopped
    }
  }
}

/**
 * A bare `node:http` server answering every request with a small JSON body, as its own process: what this
 * machine's Node can serve at all, to read the aggregator's `GET /` against.
 */
export const startBareServer = () =>
  startPortPrinter(["-e", `require("node:http").createServer((req, res) => {
    req.resume()
    res.setHeader("content-type", "application/json")
    res.end('{"status":"alive","service":"bare"}')
  }).listen(0, "127.0.0.1", function () { console.log(this.address().port) })`])

/** The naive reference server (bench/reference/naive-server.mjs) on `databaseUrl`, as its own process. */
export const startNaiveReference = ({ databaseUrl }) =>
  startPortPrinter(["bench/reference/naive-server.mjs"], { ...process.env, DATABASE_URL: databaseUrl })
