import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { spawn } from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { freePort, type Program, spawnProgram, startAggregator, withClient } from "../../support/aggregator.js"
import { until } from "../../support/live.js"
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

/** Stops `p` with `signal` unless it has exited already; kills it outright if a test failed before that. */
const stop = (p: Program, signal: NodeJS.Signals = "SIGTERM") => p.stop(signal)

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
  const proc = await startAggregator({ DATA_DIR: dataDir }, 120_000)
  return { proc, url: proc.url }
}

describe("embedded defaults (PGlite, in-process broker): no PostgreSQL or Redis server", () => {
  it("keeps its data on disk across a real restart of the aggregator process", async () => {
    const dataDir = Path.join(tempDir("restart"), "data")

    const { proc: first, url: firstUrl } = await startOn(dataDir)
    try {
      await withClient(firstUrl, (client) =>
        Effect.gen(function*() {
          expect(yield* client.health.ready()).toEqual({ status: "ready", database: "pglite" })
          expect((yield* client.events.publish({ payload: event("restart", "r1", { amount: 42 }) })).status).toBe("processed")
          const batch = yield* client.events.publishBatch({
            payload: { events: [event("restart", "r2"), event("restart", "r3"), event("restart", "r2"), event("other", "r1")] }
          })
          expect(batch).toMatchObject({ received: 4, processed: 3, duplicates: 1, rejected: 0 })
        }))
    } finally {
      await stop(first)
    }
    expect(await first.ended, first.output()).toEqual({ code: 0, signal: null })
    expect(Fs.existsSync(Path.join(dataDir, "PG_VERSION"))).toBe(true)

    const { proc: second, url: secondUrl } = await startOn(dataDir)
    try {
      await withClient(secondUrl, (client) =>
        Effect.gen(function*() {
          expect(yield* client.events.publish({ payload: event("restart", "r1", { amount: 42 }) }))
            .toEqual({ status: "dropped_duplicate", id: "r1", topic: "restart" })
          expect(yield* client.events.get({ path: { topic: "restart", event_id: "r1" } })).toMatchObject({
            topic: "restart",
            event_id: "r1",
            timestamp: "2025-06-01T00:00:00.000000Z",
            payload: { amount: 42 }
          })
          expect(yield* client.events.get({ path: { topic: "other", event_id: "r1" } })).toMatchObject({ topic: "other", event_id: "r1" })
          expect((yield* client.health.stats()).database_total_rows).toBe(4)
        }))
    } finally {
      await stop(second)
    }
    expect(await second.ended, second.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("an event acknowledged with 201 survives SIGKILL of the aggregator: after a restart on the same DATA_DIR it is there and a re-send is 200", async () => {
    const dataDir = Path.join(tempDir("sigkill"), "data")

    const { proc: first, url: firstUrl } = await startOn(dataDir)
    try {
      await withClient(firstUrl, (client) =>
        Effect.gen(function*() {
          expect((yield* client.events.publish({ payload: event("kill", "k1", { amount: 7 }) })).status).toBe("processed")
          const batch = yield* client.events.publishBatch({ payload: { events: [event("kill", "k2"), event("kill", "k3")] } })
          expect(batch).toMatchObject({ processed: 2 })
        }))
    } finally {
      await stop(first, "SIGKILL")
    }
    expect(await first.ended).toEqual({ code: null, signal: "SIGKILL" })
    expect(first.output()).not.toMatch(/"message":"drained"/)

    const { proc: second, url: secondUrl } = await startOn(dataDir)
    try {
      await withClient(secondUrl, (client) =>
        Effect.gen(function*() {
          expect(yield* client.events.get({ path: { topic: "kill", event_id: "k1" } }))
            .toMatchObject({ topic: "kill", event_id: "k1", payload: { amount: 7 } })
          expect(yield* client.events.publish({ payload: event("kill", "k1", { amount: 7 }) }))
            .toEqual({ status: "dropped_duplicate", id: "k1", topic: "kill" })
          expect((yield* client.health.stats()).database_total_rows).toBe(3)
        }))
    } finally {
      await stop(second)
    }
    expect(await second.ended, second.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("group commit gathers concurrent single-event requests into shared transactions on its default settings", async () => {
    const { proc: aggregator, url } = await startOn("memory://")
    try {
      const clients = 32
      const each = 25
      const statuses = await withClient(url, (client) =>
        Effect.forEach(Array.from({ length: clients }, (_, c) => c), (c) =>
          Effect.forEach(Array.from({ length: each }, (_, i) => event("gather", `c${c}-${i}`)), (e) =>
            Effect.map(client.events.publish({ payload: e }), (answer) => answer.status)), { concurrency: "unbounded" }))
      expect(statuses.flat().filter((s) => s !== "processed")).toEqual([])
      const metrics = parseExposition(await (await fetch(`${url}/metrics`)).text())
      const events = valueOf(metrics, "aggregator_batch_size_events_sum")
      const commits = valueOf(metrics, "aggregator_batch_size_events_count")
      expect(events).toBe(clients * each)
      expect(events / commits).toBeGreaterThan(1)
    } finally {
      await stop(aggregator)
    }
    expect(await aggregator.ended, aggregator.output()).toEqual({ code: 0, signal: null })
  }, 240_000)

  it("the one command: `node dist/demo` prints a verified summary and leaves the aggregator serving until stopped", async () => {
    const dataDir = Path.join(tempDir("demo"), "data")
    const port = await freePort()
    const demo = spawnProgram("demo", { EVENTS: "2000", PORT: String(port), DATA_DIR: dataDir })
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
      expect(await withClient(url, (client) => client.health.ready())).toEqual({ status: "ready", database: "pglite" })
      const stats = await withClient(url, (client) => client.health.stats())
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
      expect(await demo.ended, demo.output()).toEqual({ code: 0, signal: null })
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
