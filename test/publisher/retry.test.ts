import { it } from "@effect/vitest"
import { runPublisher, startPublisher } from "../support/publisher.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { Effect, Schema } from "effect"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll, expect, vi } from "vitest"
import { Stats } from "../../src/domain/Event.js"
import { defaultBackoff } from "../../src/publisher/Retry.js"
import { SendLoop } from "../../src/publisher/SendLoop.js"
import { Tally } from "../../src/publisher/Tally.js"
import { targetOf } from "../../src/client/Wire.js"
import { Workload } from "../../src/publisher/Workload.js"
import { freePort, spawnAggregator, type Spawned } from "../support/aggregator.js"
import { until } from "../support/live.js"
import { freshDatabase, query } from "../support/database.js"
import { sampleStats } from "../support/stats.js"

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
  /** Count wrongly in /stats: every duplicate as processed, or every stored event as rejected as well. */
  readonly miscount?: "duplicates as processed" | "stored also as rejected"
  /** Live replicas /stats says its counters sum (1 by default). */
  readonly replicas?: number
  /** Show each move of the counters in /stats only this long after it, as a cluster's sums lag. */
  readonly statsLagMs?: number
  /** At this publish attempt start over as a new process: counters from 0 and a new start time (storage survives). */
  readonly restartAt?: number
}

interface Counters {
  readonly received: number
  readonly unique_processed: number
  readonly duplicate_dropped: number
  readonly rejected: number
  readonly storage_failures: number
}

const noCounts: Counters = { received: 0, unique_processed: 0, duplicate_dropped: 0, rejected: 0, storage_failures: 0 }

interface Stored {
  readonly seq: number
  readonly event: Record<string, unknown>
}

/**
 * A small stand-in for the aggregator speaking its wire format, to make it misbehave on purpose. It keeps
 * when each publish attempt arrived, per event id, and counts outcomes in /stats as the aggregator does:
 * each decided attempt once (processed, duplicate or rejected), a 503 as a storage failure.
 */
// any value of the shared Stats schema, so the fake keeps up with it; the counters and row count are its own
const statsShape = Schema.encodeSync(Stats)(sampleStats())

const startFake = async (options: FakeOptions) => {
  const stored = new Map<string, Stored>()
  const attempts = new Map<string, Array<number>>()
  let seq = 0
  let publishAttempts = 0
  let statsReads = 0
  let startedAt = Date.now()
  // every state of the counters since the (last) start, and when it began
  let history: Array<{ readonly at: number; readonly counters: Counters }> = [{ at: 0, counters: noCounts }]
  const count = (move: Partial<Counters>) => {
    const now = history[history.length - 1].counters
    const next = { ...now }
    for (const [k, v] of Object.entries(move) as Array<[keyof Counters, number]>) next[k] = now[k] + v
    history.push({ at: Date.now(), counters: next })
  }
  const reported = () => {
    const visibleFrom = Date.now() - (options.statsLagMs ?? 0)
    return history.filter((h) => h.at <= visibleFrom).at(-1)!.counters
  }
  const counted = (outcome: "processed" | "dropped_duplicate" | number) => {
    if (outcome === 503) return count({ storage_failures: 1 })
    if (typeof outcome === "number") return count({ received: 1, rejected: 1 })
    if (outcome === "processed") {
      return count({ received: 1, unique_processed: 1, ...(options.miscount === "stored also as rejected" ? { rejected: 1 } : {}) })
    }
    return count(options.miscount === "duplicates as processed" ? { received: 1, unique_processed: 1 } : { received: 1, duplicate_dropped: 1 })
  }
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
  const decide = (event: any): "processed" | "dropped_duplicate" | number => {
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
  const take = (event: any) => {
    if (++publishAttempts === options.restartAt) {
      startedAt = Date.now() + 1
      history = [{ at: 0, counters: noCounts }]
    }
    const outcome = decide(event)
    counted(outcome)
    return outcome
  }
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://fake")
    if (req.method === "GET" && url.pathname === "/ready") return json(res, 200, { status: "ready", database: "postgresql" })
    if (req.method === "GET" && url.pathname === "/stats") {
      statsReads++
      const { storage_failures, ...uptime_stats } = reported()
      return json(res, 200, {
        ...statsShape,
        uptime_stats,
        storage_failures,
        database_total_rows: stored.size,
        started_at: new Date(startedAt).toISOString(),
        uptime_seconds: Math.max(0, Date.now() - startedAt) / 1000,
        cluster: { ...statsShape.cluster, uptime_stats, storage_failures, replicas: options.replicas ?? 1 }
      })
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
    statsReads: () => statsReads,
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

/**
 * The publisher's send loop, in this process, on vitest's fake clock (timers, `Date`, `performance`): the
 * clock moves only by `stepMs` once per turn of the event loop, while the sockets stay real. A wait the loop
 * asks for is thus measured in steps, whatever the machine's load, and the fake server's arrival times
 * (`Date.now()`) are read on the same clock.
 */
const sendOnFakeClock = async (
  url: string,
  options: { readonly events: number; readonly concurrency: number; readonly rate?: number; readonly stepMs: number }
) => {
  const workload = new Workload({ seed: 7, events: options.events, duplicates: 0, topics: 3 })
  const tally = new Tally(workload.events, workload.distinctKeys)
  const loop = new SendLoop(workload, tally, {
    mode: "single",
    batchSize: 1,
    concurrency: options.concurrency,
    rate: options.rate,
    // far beyond any wait here, however many steps the sockets take
    timeoutMs: 3_600_000,
    maxRetries: 5,
    policy: defaultBackoff,
    target: targetOf(url, undefined)
  })
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date", "performance"] })
  try {
    let finished: { readonly error: unknown } | undefined
    loop.start((error) => (finished = { error }))
    for (let turns = 0; finished === undefined; turns++) {
      if (turns > 1_000_000) throw new Error("the send loop did not finish")
      await new Promise((resolve) => setImmediate(resolve))
      vi.advanceTimersByTime(options.stepMs)
    }
    if (finished.error !== undefined) throw finished.error
  } finally {
    loop.close()
    vi.useRealTimers()
  }
  return { tally, firstRequestAt: loop.firstRequestAt, lastAnswerAt: loop.lastAnswerAt }
}

it.live.skipIf(skipWithoutPostgres)(`an aggregator that is not up yet: the publisher waits for /ready, then delivers everything${withoutPostgresNote}`, () =>
  Effect.gen(function*() {
    const db = yield* Effect.promise(() => freshDatabase("pub"))
    cleanup.push(db.drop)
    const port = yield* Effect.promise(freePort)
    const url = `http://127.0.0.1:${port}`
    const publisher = startPublisher(["--url", url, "--events", "600", "--mode", "single", "--concurrency", "8", "--json"])
    // nothing listens on the port yet: start the aggregator only once the publisher says its /ready was refused
    yield* Effect.promise(() => until("the publisher to wait for /ready", () => publisher.stderr().includes(`waiting for ${url}/ready`)))
    let aggregator: Spawned | undefined
    cleanup.push(async () => {
      aggregator?.child.kill("SIGTERM")
      await aggregator?.exited
    })
    aggregator = spawnAggregator({ DATABASE_URL: db.url }, port)
    const run = yield* Effect.promise(() => publisher.done)
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
    const port = yield* Effect.promise(freePort)
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
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({ ok: true, processed: 20, retries: 40, failed: 0, unanswered_sends: 0, verification: { ok: true, rows_added: 20 } })
    // a 503 is a refusal the server does not count as received: its counters stay exact
    expect(summary.verification.server_stats.added).toEqual({
      received: 20,
      unique_processed: 20,
      duplicate_dropped: 0,
      rejected: 0,
      storage_failures: 40
    })
    expect(summary.verification.checks.find((c: any) => c.name === "server stats: processed == new keys").detail)
      .toBe("+20 processed (1 replica), matches 20 new keys")
    expect(f.attempts.size).toBe(20)
    // each event refused twice, then stored: two retries each, no more (how long each waited: below)
    for (const times of f.attempts.values()) expect(times.length).toBe(3)
  }), { timeout: 60_000 })

it.live("503 with Retry-After: 1 — on a fake clock, each retry comes no sooner than the second asked for", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true, unavailableFirst: 2 }))
    const loop = yield* Effect.promise(() => sendOnFakeClock(f.url, { events: 20, concurrency: 4, stepMs: 5 }))
    expect(loop.tally.retries).toBe(40)
    expect(f.attempts.size).toBe(20)
    for (const times of f.attempts.values()) {
      expect(times.length).toBe(3)
      // the fake's arrival times are on the same fake clock; backoff alone would come back after 50–200 ms
      expect(times[1] - times[0]).toBeGreaterThanOrEqual(1000)
      expect(times[2] - times[1]).toBeGreaterThanOrEqual(1000)
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
    // the server counted each lost attempt (processed) and each retry (duplicate): more than the publisher was
    // told, by at most the sends left unanswered, which is all the stats check can hold it to
    expect(summary.unanswered_sends).toBe(20)
    expect(summary.verification.server_stats.added).toMatchObject({ received: 40, unique_processed: 20, duplicate_dropped: 20 })
    expect(summary.verification.checks.filter((c: any) => c.name.startsWith("server stats"))).toEqual([
      { name: "server stats: processed == new keys", ok: true, skipped: false, detail: "+20 processed (1 replica), matches 20 new keys" },
      {
        name: "server stats: received, duplicates and rejected as answered",
        ok: true,
        skipped: false,
        detail: "+40 received, +20 duplicates, +0 rejected, as answered (up to 20 more for sends whose answer was lost)"
      }
    ])
  }), { timeout: 60_000 })

it.live("--rate caps the pace of first attempts", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", f.url, "--events", "50", "--duplicates", "0", "--rate", "100", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    expect(f.attempts.size).toBe(50)
    // the flag reaches the loop: the 50th event is not due before 490 ms (a lower bound, which load only
    // lengthens; the pace itself is checked on the fake clock below)
    expect(JSON.parse(run.stdout).elapsed_seconds).toBeGreaterThanOrEqual(0.48)
  }), { timeout: 60_000 })

it.live("rate 100/s — on a fake clock, the 50th first attempt goes out no sooner than 490 ms after the first", () =>
  Effect.gen(function*() {
    const f = yield* Effect.promise(() => fake({ store: true }))
    const capped = yield* Effect.promise(() => sendOnFakeClock(f.url, { events: 50, concurrency: 8, rate: 100, stepMs: 1 }))
    expect(capped.tally.counts()).toMatchObject({ processed: 50 })
    expect(capped.lastAnswerAt - capped.firstRequestAt).toBeGreaterThanOrEqual(490)
    // uncapped, the same loop on the same clock takes a few steps: the bound above is the rate's doing
    const g = yield* Effect.promise(() => fake({ store: true }))
    const uncapped = yield* Effect.promise(() => sendOnFakeClock(g.url, { events: 50, concurrency: 8, stepMs: 1 }))
    expect(uncapped.tally.counts()).toMatchObject({ processed: 50 })
    expect(uncapped.lastAnswerAt - uncapped.firstRequestAt).toBeLessThan(490)
  }), { timeout: 60_000 })

const STATS_PROCESSED = "server stats: processed == new keys"
const STATS_ANSWERS = "server stats: received, duplicates and rejected as answered"

it.live("server stats that disagree with the answers fail verification (exit 1), though every row is right", () =>
  Effect.gen(function*() {
    // 35 distinct keys, 15 re-sends; the fake stores and answers correctly, only its counters are wrong
    const duplicatesAsProcessed = yield* Effect.promise(() => fake({ store: true, miscount: "duplicates as processed" }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", duplicatesAsProcessed.url, "--events", "50", "--duplicates", "0.3", "--stats-settle", "0.5", "--json"])
    )
    expect(run.code).toBe(1)
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({ ok: false, processed: 35, duplicates: 15, failed: 0, verification: { ok: false, rows_added: 35 } })
    expect(summary.verification.checks.filter((c: any) => !c.ok)).toEqual([
      { name: STATS_PROCESSED, ok: false, skipped: false, detail: "+50 processed (1 replica) vs 35 new keys" },
      { name: STATS_ANSWERS, ok: false, skipped: false, detail: "+50 received, +0 duplicates, +0 rejected; expected duplicates 15" }
    ])
    // short of the duplicates it answered: the publisher gave the counters --stats-settle to catch up first
    expect(run.stderr).toContain("the server's counters are short of what it answered; re-reading /stats for up to 500ms")
    expect(duplicatesAsProcessed.statsReads()).toBeGreaterThan(2)
    expect(run.stderr).toContain(`verification failed: ${STATS_PROCESSED}; ${STATS_ANSWERS}`)

    const rejectsStored = yield* Effect.promise(() => fake({ store: true, miscount: "stored also as rejected" }))
    const human = yield* Effect.promise(() =>
      runPublisher(["--url", rejectsStored.url, "--events", "50", "--duplicates", "0", "--mode", "batch", "--batch-size", "10"])
    )
    expect(human.code).toBe(1)
    expect(human.stdout).toContain(`  ok   ${STATS_PROCESSED}: +50 processed (1 replica), matches 50 new keys`)
    expect(human.stdout).toContain(`  FAIL ${STATS_ANSWERS}: +50 received, +0 duplicates, +50 rejected; expected rejected 0`)
    expect(human.stdout).toContain("result: FAILED")
    expect(human.stderr).toContain(`verification failed: ${STATS_ANSWERS}`)
    // too many never settles: no waiting for it
    expect(human.stderr).not.toContain("re-reading /stats")
  }), { timeout: 60_000 })

it.live("a server that restarted during the run: the stats checks are skipped, not failed, and the run verifies", () =>
  Effect.gen(function*() {
    const restarting = yield* Effect.promise(() => fake({ store: true, restartAt: 26 }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", restarting.url, "--events", "50", "--duplicates", "0", "--concurrency", "4", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary).toMatchObject({ ok: true, processed: 50, verification: { ok: true, rows_added: 50 } })
    // its counters began again at the 26th event: they saw 25 of the 50
    expect(summary.verification.server_stats).toMatchObject({
      replicas: 1,
      added: { unique_processed: 25, received: 25 },
      skipped: expect.stringMatching(/^server restarted during the run \(started \S+, then \S+\)$/)
    })
    const stats = summary.verification.checks.filter((c: any) => c.name.startsWith("server stats"))
    expect(stats.map((c: any) => c.name)).toEqual([STATS_PROCESSED, STATS_ANSWERS])
    for (const check of stats) {
      expect(check).toMatchObject({ ok: true, skipped: true, detail: expect.stringMatching(/^skipped: server restarted during the run/) })
    }

    const again = yield* Effect.promise(() => fake({ store: true, restartAt: 26 }))
    const human = yield* Effect.promise(() =>
      runPublisher(["--url", again.url, "--events", "50", "--duplicates", "0", "--concurrency", "4"])
    )
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/^ {2}skip server stats: processed == new keys: skipped: server restarted during the run/m)
    expect(human.stdout).toContain("result: OK")
  }), { timeout: 60_000 })

it.live("behind a load balancer the cluster's sums lag: the publisher re-reads /stats until they catch up", () =>
  Effect.gen(function*() {
    const cluster = yield* Effect.promise(() => fake({ store: true, replicas: 3, statsLagMs: 1_000 }))
    const run = yield* Effect.promise(() =>
      runPublisher(["--url", cluster.url, "--events", "50", "--duplicates", "0.3", "--json"])
    )
    expect(run.code, run.stderr).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.verification.checks.find((c: any) => c.name === STATS_PROCESSED)).toEqual({
      name: STATS_PROCESSED,
      ok: true,
      skipped: false,
      detail: "+35 processed (3 replicas), matches 35 new keys"
    })
    expect(summary.verification.server_stats).toEqual({
      replicas: 3,
      added: { received: 50, unique_processed: 35, duplicate_dropped: 15, rejected: 0, storage_failures: 0 },
      skipped: null
    })
    expect(run.stderr).toContain("re-reading /stats")
    expect(cluster.statsReads()).toBeGreaterThan(2)
  }), { timeout: 60_000 })
