import { it } from "@effect/vitest"
import { runPublisher } from "./support/publisher.js"
import { skipWithoutPostgres, withoutPostgresNote } from "./support/backends.js"
import { Effect, Schema } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, expect } from "vitest"
import { Stats } from "../src/domain/Event.js"
import { spawnAggregator, type Spawned } from "./support/aggregator.js"
import { freshDatabase, query } from "./support/database.js"
import { sampleStats } from "./support/stats.js"

// vitest itself sets MODE=test; the publisher must see only the flags each test passes

interface FakeOptions {
  /** Store what it acknowledges (false: answer 201 and forget, so /stats rows never move). */
  readonly store: boolean
  /** Answer the first N attempts of every event with 503 and `Retry-After: 1`. */
  readonly unavailableFirst?: number
  /** Answer every publish with this 4xx instead. */
  readonly rejectWith?: number
  /** Store each event's first attempt but never answer it, as if the answer were lost after the commit. */
  readonly loseFirstAnswer?: boolean
}

interface Stored {
  readonly seq: number
  readonly event: Record<string, unknown>
}

/**
 * A small stand-in for the aggregator speaking its wire format, to make it misbehave on purpose. It keeps
 * when each publish attempt arrived, per event id.
 */
// any value of the shared Stats schema, so the fake keeps up with it; only the row count matters here
const statsShape = Schema.encodeSync(Stats)(sampleStats())

const startFake = async (options: FakeOptions) => {
  const stored = new Map<string, Stored>()
  const attempts = new Map<string, Array<number>>()
  let seq = 0
  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json", ...headers })
    res.end(JSON.stringify(body))
  }
  const readJson = (req: IncomingMessage) =>
    new Promise<any>((resolve) => {
      let body = ""
      req.on("data", (d) => (body += d))
      req.on("end", () => resolve(JSON.parse(body)))
    })
  const take = (event: any): "processed" | "dropped_duplicate" | number => {
    const key = `${event.topic}\u0000${event.event_id}`
    const seen = attempts.get(event.event_id) ?? []
    seen.push(Date.now())
    attempts.set(event.event_id, seen)
    if (options.rejectWith !== undefined) return options.rejectWith
    if (seen.length <= (options.unavailableFirst ?? 0)) return 503
    if (!options.store) return "processed"
    if (stored.has(key)) return "dropped_duplicate"
    stored.set(key, { seq: ++seq, event })
    return "processed"
  }
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://fake")
    if (req.method === "GET" && url.pathname === "/ready") return json(res, 200, { status: "ready", database: "postgresql" })
    if (req.method === "GET" && url.pathname === "/stats") {
      return json(res, 200, { ...statsShape, database_total_rows: stored.size })
    }
    if (req.method === "GET" && url.pathname === "/events") return json(res, 200, [])
    const match = /^\/events\/([^/]+)\/([^/]+)$/.exec(url.pathname)
    if (req.method === "GET" && match !== null) {
      const s = stored.get(`${decodeURIComponent(match[1])}\u0000${decodeURIComponent(match[2])}`)
      return s === undefined
        ? json(res, 404, { error: "not_found", message: "no such event", _tag: "NotFound" })
        : json(res, 200, { seq: s.seq, source: null, ...s.event, received_at: new Date().toISOString() })
    }
    if (req.method === "POST" && url.pathname === "/publish") {
      const event = await readJson(req)
      const outcome = take(event)
      if (outcome === 503) {
        return json(res, 503, { error: "storage_unavailable", message: "try later", _tag: "StorageUnavailable" }, {
          "retry-after": "1"
        })
      }
      if (typeof outcome === "number") {
        return json(res, outcome, { error: "validation_failed", message: "no", issues: [], _tag: "ValidationFailed" })
      }
      if (options.loseFirstAnswer === true && attempts.get(event.event_id)!.length === 1) return
      return json(res, outcome === "processed" ? 201 : 200, { status: outcome, id: event.event_id, topic: event.topic })
    }
    if (req.method === "POST" && url.pathname === "/publish/batch") {
      const { events } = await readJson(req)
      const results = events.map((event: any, index: number) => {
        const outcome = take(event)
        return { index, topic: event.topic, event_id: event.event_id, status: typeof outcome === "number" ? "rejected" : outcome }
      })
      const count = (status: string) => results.filter((r: any) => r.status === status).length
      return json(res, 200, {
        received: events.length,
        processed: count("processed"),
        duplicates: count("dropped_duplicate"),
        rejected: count("rejected"),
        results
      })
    }
    json(res, 404, { error: "not_found", message: "no route" })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    attempts,
    stored,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}

const cleanup: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const f of cleanup.reverse()) await f()
})

const fake = async (options: FakeOptions) => {
  const f = await startFake(options)
  cleanup.push(f.close)
  return f
}

it.live.skipIf(skipWithoutPostgres)(`an aggregator that is not up yet: the publisher waits for /ready, then delivers everything${withoutPostgresNote}`, () =>
  Effect.gen(function*() {
    const db = yield* Effect.promise(() => freshDatabase("pub"))
    cleanup.push(db.drop)
    const port = 30000 + (process.pid % 10000)
    const url = `http://127.0.0.1:${port}`
    const publisher = runPublisher(["--url", url, "--events", "600", "--mode", "single", "--concurrency", "8", "--json"])
    // nothing listens on the port yet: the publisher's first /ready attempts are refused
    yield* Effect.sleep("2 seconds")
    let aggregator: Spawned | undefined
    cleanup.push(async () => {
      aggregator?.child.kill("SIGTERM")
      await aggregator?.exited
    })
    aggregator = spawnAggregator({ DATABASE_URL: db.url }, port)
    const run = yield* Effect.promise(() => publisher)
    expect(run.code, `${run.stderr}\n${aggregator.output()}`).toBe(0)
    expect(run.stderr).toContain(`waiting for ${url}/ready`)
    expect(run.stderr).toContain("the aggregator is ready")
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({ ok: true, processed: 420, duplicates: 180, failed: 0, verification: { ok: true, rows_added: 420 } })
    const rows = yield* Effect.promise(() => query<{ n: number }>(db.url, "SELECT count(*)::int AS n FROM events"))
    expect(rows[0].n).toBe(420)
  }), { timeout: 120_000 })

it.live("a publisher that gives up waiting for /ready exits non-zero and says why", () =>
  Effect.gen(function*() {
    const port = 40000 + (process.pid % 10000)
    const run = yield* Effect.promise(() => runPublisher(["--url", `http://127.0.0.1:${port}`, "--ready-timeout", "1", "--events", "10"]))
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/was not ready within/)
    expect(run.stdout).toBe("")
  }), { timeout: 60_000 })

it.live("503 with Retry-After: the same event is sent again, no sooner than asked, and counted once", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true, unavailableFirst: 2 }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", f.url, "--events", "20", "--duplicates", "0", "--concurrency", "4", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: true, processed: 20, retries: 40, failed: 0, verification: { ok: true, rows_added: 20 } })
    expect(f.attempts.size).toBe(20)
    for (const times of f.attempts.values()) {
      expect(times.length).toBe(3)
      // Retry-After: 1 — backoff alone would come back after 50–200 ms
      expect(times[1] - times[0]).toBeGreaterThanOrEqual(950)
      expect(times[2] - times[1]).toBeGreaterThanOrEqual(950)
    }
  }), { timeout: 60_000 })

it.live("a 422 is final: counted as rejected, never retried, exit non-zero", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true, rejectWith: 422 }))
    const run = yield* Effect.promise(() => runPublisher(["--url", f.url, "--events", "10", "--duplicates", "0", "--json"]))
    expect(run.code).toBe(1)
    expect(JSON.parse(run.stdout)).toMatchObject({ ok: false, rejected: 10, processed: 0, retries: 0 })
    for (const times of f.attempts.values()) expect(times.length).toBe(1)
  }), { timeout: 60_000 })

it.live("a server that acknowledges without storing fails verification (exit 1); --no-verify does not check", () =>
  Effect.gen(function*() {
    for (const mode of ["single", "batch"]) {
      const f = yield* Effect.promise(() => fake({ store: false }))
      const run = yield* Effect.promise(() => runPublisher(["--url", f.url, "--events", "50", "--mode", mode, "--json"]))
      expect(run.code).toBe(1)
      const summary = JSON.parse(run.stdout)
      expect(summary.ok).toBe(false)
      expect(summary.processed).toBe(50)
      const failed = summary.verification.checks.filter((c: any) => !c.ok).map((c: any) => c.name)
      expect(failed).toContain("database rows added == new keys acknowledged as processed")
      expect(failed).toContain("sampled keys read back as sent")
      expect(failed).toContain("no key processed twice")
      expect(run.stderr).toContain("verification failed")

      const unchecked = yield* Effect.promise(() => runPublisher(["--url", f.url, "--events", "50", "--mode", mode, "--no-verify"]))
      expect(unchecked.code).toBe(0)
      expect(unchecked.stdout).toContain("verification: skipped")
    }
  }), { timeout: 60_000 })

it.live("an answer lost after the commit: the retry is told duplicate, and verification still adds up exactly", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true, loseFirstAnswer: true }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", f.url, "--events", "20", "--duplicates", "0", "--concurrency", "20", "--timeout", "0.5", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({
      ok: true,
      processed: 0,
      duplicates: 20,
      retries: 20,
      failed: 0,
      verification: { ok: true, rows_added: 20, new_keys: 20, already_stored_keys: 0 }
    })
    expect(summary.verification.checks.find((c: any) => c.name.startsWith("database rows")).detail).toContain("20 recovered")
  }), { timeout: 60_000 })

it.live("--rate caps the pace of first attempts", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", f.url, "--events", "50", "--duplicates", "0", "--rate", "100", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    // the 50th event is due 490 ms after the first at 100 events/s; uncapped, 50 events take a few ms here.
    // Arrival times are seen by the server: the first request also pays for opening its connection, which
    // shortens the measured span by that much (CI once saw 479 ms), so the bound leaves room for it.
    const starts = [...f.attempts.values()].map((t) => t[0]).sort((a, b) => a - b)
    expect(starts[starts.length - 1] - starts[0]).toBeGreaterThanOrEqual(400)
    expect(JSON.parse(run.stdout).elapsed_seconds).toBeGreaterThanOrEqual(0.48)
  }), { timeout: 60_000 })
