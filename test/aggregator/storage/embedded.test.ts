import { afterAll, describe, expect, it } from "vitest"
import { type ChildProcess, spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { postJson, waitFor } from "../../support/aggregator.js"
import { freePort, until } from "../../support/live.js"
import { parseExposition, valueOf } from "../../support/prometheus.js"

// The embedded defaults as a new user meets them: real processes on PGlite and the in-process broker, real HTTP
// on loopback, no PostgreSQL or Redis server — so nothing here is skipped when those are missing.

const event = (topic: string, event_id: string, payload: unknown = { n: event_id }) => ({
  topic,
  event_id,
  timestamp: "2025-06-01T00:00:00Z",
  payload
})

const roots: Array<string> = []
const tempDir = (name: string) => {
  const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), `embedded-${name}-`))
  roots.push(root)
  return root
}
afterAll(() => {
  for (const root of roots) Fs.rmSync(root, { recursive: true, force: true })
})

// Settings of the caller's shell that would take the programs off their defaults (vitest sets MODE=test,
// which the publisher reads as its sending mode).
const NOT_INHERITED = [
  "DATABASE_URL", "REDIS_URL", "DATA_DIR", "PORT", "HOST", "API_KEYS", "API_KEY", "AGGREGATOR_URL", "EVENTS", "DUPLICATES",
  "MODE", "GROUP_COMMIT", "FLUSH_WINDOW_MS", "FLUSH_MAX_EVENTS", "FLUSH_CONCURRENCY"
]

interface Started {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/** `node dist/<program>` (run `npm run build` first; `npm test` does) on the embedded defaults plus `env`. */
const start = (program: string, env: Record<string, string>): Started => {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !NOT_INHERITED.includes(k)))
  const child = spawn(process.execPath, [`dist/${program}`], {
    env: { ...inherited, LOG_LEVEL: "Info", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal }))
  )
  return { child, output: () => output, exited }
}

/** Stops `p` with `signal` unless it has exited already; kills it outright if a test failed before that. */
const stop = async (p: Started, signal: NodeJS.Signals = "SIGTERM") => {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal)
  return p.exited
}

const json = async (url: string): Promise<any> => {
  const res = await fetch(url)
  expect(res.status, url).toBe(200)
  return res.json()
}

/** The processes `pid` started that are still running (Linux: /proc). */
const childrenOf = (pid: number): Array<number> =>
  Fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
    Fs.readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").trim().split(/\s+/).filter((s) => s !== "").map(Number)
  )

const running = (pid: number) => {
  try {
    // a zombie (exited, not yet reaped) has stopped running
    return !/^\d+ \(.*\) Z/.test(Fs.readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return false
  }
}

/** The aggregator on `dataDir` at a free port, ready. */
const startOn = async (dataDir: string) => {
  const port = String(await freePort())
  const proc = start("aggregator", { DATA_DIR: dataDir, PORT: port, HOST: "127.0.0.1" })
  const url = `http://127.0.0.1:${port}`
  try {
    await waitFor(`${url}/ready`, 120_000)
  } catch (e) {
    await stop(proc)
    throw e
  }
  return { proc, url }
}

describe("embedded defaults (PGlite, in-process broker): no PostgreSQL or Redis server", () => {
  it("keeps its data on disk across a real restart of the aggregator process", async () => {
    const dataDir = Path.join(tempDir("restart"), "data")

    const { proc: first, url: firstUrl } = await startOn(dataDir)
    try {
      expect(await json(`${firstUrl}/ready`)).toEqual({ status: "ready", database: "pglite" })
      expect((await postJson(`${firstUrl}/publish`, event("restart", "r1", { amount: 42 }))).status).toBe(201)
      const batch = await postJson(`${firstUrl}/publish/batch`, {
        events: [event("restart", "r2"), event("restart", "r3"), event("restart", "r2"), event("other", "r1")]
      })
      expect(batch.status).toBe(200)
      expect(await batch.json()).toMatchObject({ received: 4, processed: 3, duplicates: 1, rejected: 0 })
    } finally {
      await stop(first)
    }
    expect(await first.exited, first.output()).toEqual({ code: 0, signal: null })
    expect(Fs.existsSync(Path.join(dataDir, "PG_VERSION"))).toBe(true)

    const { proc: second, url: secondUrl } = await startOn(dataDir)
    try {
      const again = await postJson(`${secondUrl}/publish`, event("restart", "r1", { amount: 42 }))
      expect(again.status).toBe(200)
      expect(await again.json()).toEqual({ status: "dropped_duplicate", id: "r1", topic: "restart" })
      expect(await json(`${secondUrl}/events/restart/r1`)).toMatchObject({
        topic: "restart",
        event_id: "r1",
        timestamp: "2025-06-01T00:00:00.000000Z",
        payload: { amount: 42 }
      })
      expect(await json(`${secondUrl}/events/other/r1`)).toMatchObject({ topic: "other", event_id: "r1" })
      expect((await json(`${secondUrl}/stats`)).database_total_rows).toBe(4)
    } finally {
      await stop(second)
    }
    expect(await second.exited, second.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("an event acknowledged with 201 survives SIGKILL of the aggregator: after a restart on the same DATA_DIR it is there and a re-send is 200", async () => {
    const dataDir = Path.join(tempDir("sigkill"), "data")

    const { proc: first, url: firstUrl } = await startOn(dataDir)
    try {
      const acknowledged = await postJson(`${firstUrl}/publish`, event("kill", "k1", { amount: 7 }))
      expect(acknowledged.status).toBe(201)
      const batch = await postJson(`${firstUrl}/publish/batch`, { events: [event("kill", "k2"), event("kill", "k3")] })
      expect(await batch.json()).toMatchObject({ processed: 2 })
    } finally {
      await stop(first, "SIGKILL")
    }
    expect(await first.exited).toEqual({ code: null, signal: "SIGKILL" })
    expect(first.output()).not.toMatch(/"message":"drained"/)

    const { proc: second, url: secondUrl } = await startOn(dataDir)
    try {
      expect(await json(`${secondUrl}/events/kill/k1`)).toMatchObject({ topic: "kill", event_id: "k1", payload: { amount: 7 } })
      const again = await postJson(`${secondUrl}/publish`, event("kill", "k1", { amount: 7 }))
      expect(again.status).toBe(200)
      expect(await again.json()).toEqual({ status: "dropped_duplicate", id: "k1", topic: "kill" })
      expect((await json(`${secondUrl}/stats`)).database_total_rows).toBe(3)
    } finally {
      await stop(second)
    }
    expect(await second.exited, second.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("group commit gathers concurrent single-event requests into shared transactions on its default settings", async () => {
    const { proc: aggregator, url } = await startOn("memory://")
    try {
      const clients = 32
      const each = 25
      const statuses = await Promise.all(Array.from({ length: clients }, async (_, c) => {
        const seen: Array<number> = []
        for (let i = 0; i < each; i++) {
          const res = await postJson(`${url}/publish`, event("gather", `c${c}-${i}`))
          await res.arrayBuffer()
          seen.push(res.status)
        }
        return seen
      }))
      expect(statuses.flat().filter((s) => s !== 201)).toEqual([])
      const metrics = parseExposition(await (await fetch(`${url}/metrics`)).text())
      const events = valueOf(metrics, "aggregator_batch_size_events_sum")
      const commits = valueOf(metrics, "aggregator_batch_size_events_count")
      expect(events).toBe(clients * each)
      expect(events / commits).toBeGreaterThan(1)
    } finally {
      await stop(aggregator)
    }
    expect(await aggregator.exited, aggregator.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("the one command: `node dist/demo` prints a verified summary and leaves the aggregator serving until stopped", async () => {
    const dataDir = Path.join(tempDir("demo"), "data")
    const port = await freePort()
    const demo = start("demo", { EVENTS: "2000", PORT: String(port), DATA_DIR: dataDir })
    const url = `http://127.0.0.1:${port}`
    try {
      await until("the demo's summary and its keeps-running line", () => /keeps running at/.test(demo.output()), 180_000)
      const output = demo.output()
      expect(output).toMatch(/running the publisher with 2,000 events, 30% duplicates/)
      expect(output).toContain(`embedded PostgreSQL in ${dataDir}`)
      expect(output).toContain(`data stays in ${dataDir}`)
      expect(output).toMatch(/^result: OK$/m)
      expect(output).not.toMatch(/^\s+FAIL /m)
      const distinct = Number(/sent\s+2,000 events = ([\d,]+) distinct keys/.exec(output)?.[1].replaceAll(",", ""))
      expect(distinct).toBeGreaterThan(0)
      expect(output).toMatch(new RegExp(`ok\\s+database rows added == new keys acknowledged as processed: ${distinct} rows added`))

      // after the summary the aggregator is still there, serving what the run stored
      expect(await json(`${url}/ready`)).toEqual({ status: "ready", database: "pglite" })
      const stats = await json(`${url}/stats`)
      expect(stats.database_total_rows).toBe(distinct)
      expect(stats.uptime_stats).toMatchObject({ received: 2000, unique_processed: distinct, duplicate_dropped: 2000 - distinct })
      expect(Fs.existsSync(Path.join(dataDir, "PG_VERSION"))).toBe(true)

      const aggregators = childrenOf(demo.child.pid!).filter((pid) =>
        Fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("dist/aggregator")
      )
      expect(aggregators).toHaveLength(1)
      const [aggregator] = aggregators

      // Ctrl-C: the demo stops its aggregator (SIGTERM, drained) and exits
      demo.child.kill("SIGINT")
      expect(await demo.exited, demo.output()).toEqual({ code: 0, signal: null })
      expect(demo.output()).toMatch(/"message":"drained"/)
      await until("the demo's aggregator to be gone", () => !running(aggregator), 10_000)
      await expect(fetch(`${url}/`)).rejects.toThrow()
    } finally {
      await stop(demo, "SIGKILL")
    }
  }, 240_000)

  it("`npm run reset` deletes DATA_DIR when it is set", async () => {
    const root = tempDir("reset")
    const dataDir = Path.join(root, "data")
    const bystander = Path.join(root, "kept")
    Fs.mkdirSync(Path.join(dataDir, "base"), { recursive: true })
    Fs.writeFileSync(Path.join(dataDir, "PG_VERSION"), "17\n")
    Fs.mkdirSync(bystander)
    const { DATA_DIR: _inherited, ...env } = process.env
    const reset = spawn("npm", ["run", "--silent", "reset"], { env: { ...env, DATA_DIR: dataDir }, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    reset.stdout.on("data", (d) => (output += d))
    reset.stderr.on("data", (d) => (output += d))
    const code = await new Promise<number | null>((resolve) => reset.on("exit", resolve))
    expect(code, output).toBe(0)
    expect(Fs.existsSync(dataDir)).toBe(false)
    expect(Fs.existsSync(bystander)).toBe(true)
    expect(output).toContain(dataDir)
  }, 60_000)
})
