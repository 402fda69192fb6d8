import { describe, expect, it, layer } from "@effect/vitest"
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { ConfigProvider, Deferred, Effect, Either, Exit, FastCheck as fc, Layer, Logger, LogLevel } from "effect"
import { Batcher } from "../../../src/aggregator/ingest/Batcher.js"
import { Broker } from "../../../src/aggregator/live/Broker.js"
import { AggregatorConfig } from "../../../src/aggregator/Config.js"
import { Database } from "../../../src/aggregator/storage/Database.js"
import { eventKey, EventStore, type Inserted, type NewEvent } from "../../../src/aggregator/storage/EventStore.js"
import { Draining } from "../../../src/aggregator/ops/Lifecycle.js"
import { Counters } from "../../../src/aggregator/ingest/Counters.js"
import { Retention } from "../../../src/aggregator/storage/Retention.js"
import { type Overloaded, StorageUnavailable } from "../../../src/domain/Errors.js"
import type { StoredEvent } from "../../../src/domain/Event.js"
import { routesOver } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"
import { databaseUnreachable, eventStoreTest } from "../../support/fakes.js"

// The writer's contract, checked against what the store was actually asked to do: every flush the store
// receives is recorded with its members (the events, in flush order) and its outcome, and every answer a
// submitter gets is checked against the flush(es) its events went into. Interleavings are generated: each
// submission waits a generated number of scheduler yields before it is made; each flush is held until a
// generated share of the case's events has reached the writer (a condition, not a clock), then waits a
// generated number of yields before it commits or fails. So what a flush gathers, and the order flushes
// finish in, vary by case and shrink with it.

const ev = (key: number, topic = "t"): NewEvent => ({
  topic,
  event_id: `k${key}`,
  timestamp: "2025-01-01T00:00:00Z",
  source: null,
  payload: null
})

/** Key n as an event of its own (a fresh object, so a flushed event can be traced to its submitter). */
const keyed = (n: number, prefix = ""): NewEvent => ev(Math.floor(n / 3), `${prefix}t${n % 3}`)
const keyOf = (e: NewEvent) => eventKey(e.topic, e.event_id)

const yields = (n: number) => n === 0 ? Effect.void : Effect.repeatN(Effect.yieldNow(), n - 1)

const configLayer = (env: Record<string, string>) =>
  AggregatorConfig.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

interface Flush {
  readonly members: ReadonlyArray<NewEvent>
  /** The most rows the writer asked the store to put in one statement. */
  readonly statementRows: number | undefined
  outcome: "open" | "committed" | "failed"
  /** The store's answer per member (committed flushes only). */
  answers: ReadonlyArray<boolean>
  /** The order in which committed flushes took effect (fake store only; -1 when unknown). */
  commitOrder: number
}

interface FlushStep {
  /** Percent of the case's events that must have reached the writer before this flush goes on. */
  readonly hold: number
  readonly yields: number
  readonly fail: boolean
}

/**
 * Records every flush `insertMany` receives and its outcome around `write`. Flush n is held until
 * `plan[n].hold` percent of the events announced with `watch` have reached the writer (submitted, whether
 * pending or done), then waits `plan[n].yields` scheduler turns; it fails when `plan[n].fail` or `write` fails.
 * Holding never deadlocks: submissions reach the writer whatever its flushes are doing.
 */
const recording = (
  write: EventStore["insertMany"],
  plan: ReadonlyArray<FlushStep>
) => {
  const flushes: Array<Flush> = []
  let inFlight = 0
  let maxInFlight = 0
  let commits = 0
  let done = 0
  let arrivals: { readonly total: number; readonly pending: Effect.Effect<number> } | undefined
  const held = (percent: number) =>
    Effect.gen(function*() {
      if (arrivals === undefined) return
      const target = Math.ceil((arrivals.total * percent) / 100)
      while (done + (yield* arrivals.pending) < target) yield* Effect.sleep("1 millis")
    })
  const insertMany: EventStore["insertMany"] = (events, statementRows) =>
    Effect.suspend(() => {
      const flush: Flush = { members: [...events], statementRows, outcome: "open", answers: [], commitOrder: -1 }
      const step = plan[flushes.length] ?? { hold: 0, yields: 0, fail: false }
      flushes.push(flush)
      inFlight++
      maxInFlight = Math.max(maxInFlight, inFlight)
      return held(step.hold).pipe(
        Effect.zipRight(yields(step.yields)),
        Effect.zipRight(step.fail ? Effect.fail(new StorageUnavailable({ message: "injected" })) : write(events, statementRows)),
        Effect.onExit((exit) =>
          Effect.sync(() => {
            inFlight--
            done += events.length
            if (Exit.isSuccess(exit)) {
              flush.outcome = "committed"
              flush.answers = exit.value.map(isStored)
              flush.commitOrder = commits++
            } else {
              flush.outcome = "failed"
            }
          })
        )
      )
    })
  return {
    flushes,
    insertMany,
    maxInFlight: () => maxInFlight,
    /** Announces how many events the case will submit, and where to read how many are pending. */
    watch: (total: number, pending: Effect.Effect<number>) => {
      arrivals = { total, pending }
    }
  }
}

/** An in-memory, atomic, first-wins store; it remembers which event object stored each key. */
const memoryStore = (plan: ReadonlyArray<FlushStep> = [], poisonTopic?: string, gate?: Deferred.Deferred<void>) => {
  const winners = new Map<string, NewEvent>()
  const write: EventStore["insertMany"] = (events) =>
    Effect.gen(function*() {
      if (gate) yield* Deferred.await(gate)
      if (events.some((e) => e.topic === poisonTopic)) return yield* new StorageUnavailable({ message: "poisoned" })
      return events.map((e) => winners.has(keyOf(e)) ? undefined : (winners.set(keyOf(e), e), rowOf(e, winners.size)))
    })
  const recorder = recording(write, plan)
  const layer = eventStoreTest(recorder.insertMany, Effect.sync(() => winners.size))
  return { winners, layer, ...recorder }
}

type Answer = Either.Either<ReadonlyArray<boolean>, Overloaded | StorageUnavailable>

const isStored = (row: StoredEvent | undefined) => row !== undefined
const rowOf = (e: NewEvent, seq: number): StoredEvent => ({ ...e, seq, payload: null, received_at: "2025-01-01T00:00:00.000000Z" })
/** What a submission was told, per event: stored by it or not. */
const flagsOf = (submission: Effect.Effect<Inserted, Overloaded | StorageUnavailable>) =>
  Effect.either(Effect.map(submission, (rows) => rows.map(isStored)))

/**
 * The contract, checked from the flush records:
 * - every submitted event went into exactly one flush, and flushes hold nothing else;
 * - a submission is never split: all its events are one run of one flush, in its own order (so it is stored
 *   whole or not at all, and its answers can be sliced out);
 * - a submission with any event in a failed flush got StorageUnavailable (503) and was told nothing stored;
 * - a submission whose flushes all committed got, per event, exactly what the store answered for it;
 * - a key in some committed flush was stored by exactly one occurrence (the store answered "new" once), the
 *   first occurrence of the key in that flush's order; its submitter was told "new", and nobody else was;
 * - a key only ever in failed flushes was stored by nobody and told "new" to nobody.
 */
const checkAgainstFlushes = (
  submitted: ReadonlyArray<ReadonlyArray<NewEvent>>,
  answers: ReadonlyArray<Answer>,
  flushes: ReadonlyArray<Flush>
) => {
  const origin = new Map<NewEvent, readonly [number, number]>()
  submitted.forEach((events, sub) => events.forEach((e, pos) => origin.set(e, [sub, pos])))
  const placed = new Map<NewEvent, { readonly flush: Flush; readonly index: number }>()
  for (const flush of flushes) {
    expect(flush.outcome).not.toBe("open")
    const runs = new Set<number>()
    flush.members.forEach((e, index) => {
      const from = origin.get(e)
      if (from === undefined) return expect.fail("a flush held an event nobody submitted")
      expect(placed.has(e), "an event was flushed twice").toBe(false)
      placed.set(e, { flush, index })
      const before = index > 0 ? origin.get(flush.members[index - 1]) : undefined
      if (before !== undefined && before[0] === from[0]) {
        expect(from[1]).toBe(before[1] + 1)
      } else {
        expect(runs.has(from[0]), "a submission's events were split up inside one flush").toBe(false)
        expect(from[1], "a submission's events were split over flushes").toBe(0)
        runs.add(from[0])
      }
    })
  }
  expect(placed.size).toBe(origin.size)
  submitted.forEach((events) => {
    expect(new Set(events.map((e) => placed.get(e)!.flush)).size, "a submission's events were split over flushes").toBe(1)
  })

  submitted.forEach((events, sub) => {
    const answer = answers[sub]
    if (events.some((e) => placed.get(e)!.flush.outcome === "failed")) {
      expect(Either.isLeft(answer) && answer.left._tag, `submission ${sub} had an event in a failed flush`).toBe("StorageUnavailable")
    } else {
      expect(Either.isRight(answer) ? answer.right : answer.left, `submission ${sub}: the store's answers for its events`)
        .toEqual(events.map((e) => {
          const { flush, index } = placed.get(e)!
          return flush.answers[index]
        }))
    }
  })

  const toldNew = new Map<string, Array<NewEvent>>()
  answers.forEach((answer, sub) => {
    if (Either.isRight(answer)) {
      answer.right.forEach((isNew, pos) => {
        const e = submitted[sub][pos]
        if (isNew) toldNew.set(keyOf(e), [...(toldNew.get(keyOf(e)) ?? []), e])
      })
    }
  })
  const committed = flushes.filter((f) => f.outcome === "committed")
  const committedKeys = new Set(committed.flatMap((f) => f.members.map(keyOf)))
  const storedBy = new Map<string, Array<NewEvent>>()
  for (const f of committed) {
    f.members.forEach((e, i) => {
      if (f.answers[i]) storedBy.set(keyOf(e), [...(storedBy.get(keyOf(e)) ?? []), e])
    })
  }
  for (const key of new Set(submitted.flat().map(keyOf))) {
    const told = toldNew.get(key) ?? []
    const stored = storedBy.get(key) ?? []
    if (!committedKeys.has(key)) {
      expect(stored, `${key} is only in failed flushes`).toEqual([])
      expect(told, `${key} is only in failed flushes`).toEqual([])
      continue
    }
    expect(stored.length, `${key} was stored by ${stored.length} occurrences`).toBe(1)
    const winner = stored[0]
    const { flush, index } = placed.get(winner)!
    expect(flush.members.findIndex((e) => keyOf(e) === key), "first occurrence in flush order wins").toBe(index)
    expect(told, `${key}: who was told "new"`).toEqual([winner])
  }
  return { committedKeys, storedBy }
}

const submissionArb = fc.record({
  // mostly small, so that several fit in one flush; sometimes larger than FLUSH_MAX_EVENTS
  keys: fc.oneof(
    { weight: 3, arbitrary: fc.array(fc.integer({ min: 0, max: 23 }), { minLength: 1, maxLength: 3 }) },
    { weight: 1, arbitrary: fc.array(fc.integer({ min: 0, max: 23 }), { minLength: 1, maxLength: 16 }) }
  ),
  delay: fc.nat({ max: 12 })
})
const submissions = fc.array(submissionArb, { minLength: 1, maxLength: 40, size: "medium" })
const flushPlan = (fail: fc.Arbitrary<boolean>) =>
  fc.array(
    fc.record({
      hold: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 4, arbitrary: fc.integer({ min: 1, max: 100 }) }),
      yields: fc.nat({ max: 8 }),
      fail
    }),
    { maxLength: 60 }
  )
const sometimes = fc.integer({ min: 0, max: 3 }).map((n) => n === 0)
const settings = fc.record({
  groupCommit: fc.boolean(),
  flushMaxEvents: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 5, max: 32 })),
  flushConcurrency: fc.integer({ min: 1, max: 4 }),
  flushWindowMs: fc.constantFrom(0, 0, 0, 1),
  flushOverlapEvents: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.constant(1000))
})
type Settings = typeof settings extends fc.Arbitrary<infer A> ? A : never

const envOf = (s: Settings) => ({
  GROUP_COMMIT: String(s.groupCommit),
  FLUSH_MAX_EVENTS: String(s.flushMaxEvents),
  FLUSH_CONCURRENCY: String(s.flushConcurrency),
  FLUSH_WINDOW_MS: String(s.flushWindowMs),
  FLUSH_OVERLAP_EVENTS: String(s.flushOverlapEvents)
})

/** Waits until nothing is pending, so the checks see every flush finished. */
const drained = Effect.gen(function*() {
  const batcher = yield* Batcher
  for (let i = 0; i < 10_000 && (yield* batcher.pendingEvents) > 0; i++) yield* Effect.sleep("1 millis")
  expect(yield* batcher.pendingEvents).toBe(0)
})

/** Each submission waits its generated number of yields, then submits; all run at once. */
const submitAll = (
  subs: ReadonlyArray<{ readonly delay: number }>,
  events: ReadonlyArray<ReadonlyArray<NewEvent>>,
  recorder?: { readonly watch: (total: number, pending: Effect.Effect<number>) => void }
) =>
  Effect.gen(function*() {
    const batcher = yield* Batcher
    recorder?.watch(events.flat().length, batcher.pendingEvents)
    return yield* Effect.forEach(
      subs,
      (s, i) => yields(s.delay).pipe(Effect.zipRight(flagsOf(batcher.submit(events[i])))),
      { concurrency: "unbounded" }
    )
  })

/** Runs one generated case against a fresh Batcher over the in-memory store. */
const runOnMemory = (
  subs: ReadonlyArray<{ readonly keys: ReadonlyArray<number>; readonly delay: number }>,
  s: Settings,
  plan: ReadonlyArray<FlushStep>,
  poisonTopic?: string
) =>
  Effect.gen(function*() {
    const store = memoryStore(plan, poisonTopic)
    const events = subs.map((x) => x.keys.map((k) => keyed(k)))
    const answers = yield* submitAll(subs, events, store).pipe(
      Effect.tap(() => drained),
      Effect.provide(Batcher.DefaultWithoutDependencies.pipe(Layer.provide(Broker.Default), Layer.provide(store.layer), Layer.provide(configLayer(envOf(s)))))
    )
    const { committedKeys, storedBy } = checkAgainstFlushes(events, answers, store.flushes)

    // With the fake store commits are atomic steps in one order: the first committed flush holding a key
    // stored it, at the key's first occurrence there.
    const committed = store.flushes.filter((f) => f.outcome === "committed").sort((a, b) => a.commitOrder - b.commitOrder)
    for (const key of committedKeys) {
      const first = committed.find((f) => f.members.some((e) => keyOf(e) === key))!
      const winner = first.members.find((e) => keyOf(e) === key)
      expect(store.winners.get(key)).toBe(winner)
      expect(storedBy.get(key)).toEqual([winner])
    }
    expect(new Set(store.winners.keys())).toEqual(committedKeys)
    for (const f of store.flushes.filter((f) => f.outcome === "failed")) {
      for (const e of f.members) expect([...store.winners.values()]).not.toContain(e)
    }

    for (const f of store.flushes) {
      const from = new Set(f.members.map((e) => events.findIndex((x) => x.includes(e))))
      // a flush gathers at most FLUSH_MAX_EVENTS, except one larger submission that is a flush of its own
      if (f.members.length > s.flushMaxEvents) expect(from.size).toBe(1)
      // with gathering off, no flush mixes two submissions
      if (!s.groupCommit) expect(from.size).toBe(1)
      expect(f.statementRows).toBe(s.flushMaxEvents)
    }
    if (s.groupCommit) expect(store.maxInFlight()).toBeLessThanOrEqual(s.flushConcurrency)
    return { store, answers }
  })

/**
 * A Batcher over the in-memory store whose writes all wait for one gate, under `env`; `body` gets the store and a
 * way to submit that answers each event's stored flag. The gate is opened when `body` ends, however it ends, so
 * a failed expectation does not leave a held flush holding the Batcher's scope open.
 */
const withGatedStore = <A>(
  env: Record<string, string>,
  body: (
    store: ReturnType<typeof memoryStore>,
    gate: Deferred.Deferred<void>,
    flags: (events: ReadonlyArray<NewEvent>) => Effect.Effect<ReadonlyArray<boolean>, Overloaded | StorageUnavailable, Batcher>
  ) => Effect.Effect<A, unknown, Batcher>
) =>
  Effect.gen(function*() {
    const gate = yield* Deferred.make<void>()
    const store = memoryStore([], undefined, gate)
    const flags = (events: ReadonlyArray<NewEvent>) =>
      Effect.flatMap(Batcher, (batcher) => Effect.map(batcher.submit(events), (rows) => rows.map(isStored)))
    return yield* body(store, gate, flags).pipe(
      Effect.ensuring(Deferred.succeed(gate, undefined)),
      Effect.provide(Batcher.DefaultWithoutDependencies.pipe(
        Layer.provide(Broker.Default),
        Layer.provide(store.layer),
        Layer.provide(configLayer(env))
      ))
    )
  })

describe("Batcher (group commit)", () => {
  it.live.prop(
    "any generated interleaving: every key is told \"new\" exactly once, at its first occurrence, and stored once",
    [submissions, settings, flushPlan(fc.constant(false))],
    ([subs, s, plan]) =>
      Effect.gen(function*() {
        const { store, answers } = yield* runOnMemory(subs, s, plan)
        expect(answers.every(Either.isRight)).toBe(true)
        expect(new Set(store.winners.keys())).toEqual(new Set(subs.flatMap((x) => x.keys.map((k) => keyOf(keyed(k))))))
      }),
    { fastCheck: { numRuns: 80 } }
  )

  it.live.prop(
    "a failed flush answers StorageUnavailable to every member, none of its events is stored, the rest commit",
    [submissions, settings, flushPlan(sometimes), fc.option(fc.constantFrom("t0", "t1", "t2"), { nil: undefined })],
    ([subs, s, plan, poisonTopic]) => Effect.asVoid(runOnMemory(subs, s, plan, poisonTopic)),
    { fastCheck: { numRuns: 80 } }
  )

  it.live("generated delays do change how submissions are gathered into flushes", () =>
    Effect.gen(function*() {
      // the same submissions under different delay plans: the interleaving generator is not a no-op
      const keys = Array.from({ length: 12 }, (_, i) => [i, i + 12])
      const s: Settings = { groupCommit: true, flushMaxEvents: 6, flushConcurrency: 2, flushWindowMs: 0, flushOverlapEvents: 1000 }
      const shapes = new Set<string>()
      for (const delays of [keys.map(() => 0), keys.map((_, i) => i), keys.map((_, i) => 12 - i), keys.map((_, i) => (i * 5) % 7)]) {
        const { store } = yield* runOnMemory(keys.map((k, i) => ({ keys: k, delay: delays[i] })), s, [])
        shapes.add(JSON.stringify(store.flushes.map((f) => f.members.map(keyOf))))
      }
      expect(shapes.size).toBeGreaterThan(1)
    }))

  it.live("while a flush is in flight, the next starts once FLUSH_OVERLAP_EVENTS wait, not before", () =>
    withGatedStore({ FLUSH_CONCURRENCY: "2", FLUSH_OVERLAP_EVENTS: "3", FLUSH_BUSY_WINDOW_MS: "0" }, (store, gate, flags) =>
      Effect.gen(function*() {
        const settle = Effect.sleep("20 millis")
        const first = yield* Effect.fork(flags([ev(1)]))
        yield* settle
        expect(store.flushes.length).toBe(1)
        // two events wait behind the held flush: fewer than 3, so nothing more starts
        const second = yield* Effect.fork(flags([ev(2), ev(3)]))
        yield* settle
        expect(store.flushes.length).toBe(1)
        // the third waiting event reaches FLUSH_OVERLAP_EVENTS: a second flush starts beside the first
        const third = yield* Effect.fork(flags([ev(4)]))
        yield* settle
        expect(store.flushes.map((f) => f.members.length)).toEqual([1, 3])
        expect(store.maxInFlight()).toBe(2)
        // and with FLUSH_CONCURRENCY 2 a third does not, however many wait
        const fourth = yield* Effect.fork(flags([ev(5), ev(6), ev(7), ev(8)]))
        yield* settle
        expect(store.flushes.length).toBe(2)
        yield* Deferred.succeed(gate, undefined)
        expect(yield* first.await).toEqual(Exit.succeed([true]))
        expect(yield* second.await).toEqual(Exit.succeed([true, true]))
        expect(yield* third.await).toEqual(Exit.succeed([true]))
        expect(yield* fourth.await).toEqual(Exit.succeed([true, true, true, true]))
        expect(store.maxInFlight()).toBe(2)
      })))

  it.live("past the pending cap a submission is refused with Overloaded at once, and the rest still commit", () =>
    withGatedStore({ MAX_PENDING_EVENTS: "5", FLUSH_CONCURRENCY: "1" }, (_store, gate, flags) =>
      Effect.gen(function*() {
        const batcher = yield* Batcher
        const first = yield* Effect.fork(flags([ev(1), ev(2), ev(3)]))
        const second = yield* Effect.fork(flags([ev(4), ev(5)]))
        while ((yield* batcher.pendingEvents) < 5) yield* Effect.yieldNow()
        const refused = yield* Effect.either(batcher.submit([ev(6)]))
        expect(Either.isLeft(refused) && refused.left._tag).toBe("Overloaded")
        yield* Deferred.succeed(gate, undefined)
        expect(yield* first.await).toEqual(Exit.succeed([true, true, true]))
        expect(yield* second.await).toEqual(Exit.succeed([true, true]))
        expect(yield* batcher.pendingEvents).toBe(0)
        expect(yield* flags([ev(6)])).toEqual([true])
      })))
})

// ---- Through the real HTTP handlers: statuses and /stats ------------------------------------------------

/** A database the HTTP routes under test never reach (the store is the fake one). */
/** The aggregator's own routes, middleware, batcher, broker and counters, over a real loopback HTTP server. */
const httpOver = (store: Layer.Layer<EventStore>, env: Record<string, string>) =>
  routesOver(Batcher.DefaultWithoutDependencies.pipe(
    Layer.provideMerge(Broker.Default),
    Layer.provideMerge(Retention.DefaultWithoutDependencies),
    Layer.provideMerge(store),
    Layer.provideMerge(databaseUnreachable),
    Layer.provideMerge(Counters.Default),
    Layer.provideMerge(Draining.Default),
    Layer.provideMerge(configLayer(env))
  ))

const item = fc.record({ key: fc.integer({ min: 0, max: 17 }), valid: fc.integer({ min: 0, max: 7 }).map((n) => n !== 0) })
const httpRequest = fc.oneof(
  fc.record({ kind: fc.constant("one" as const), items: item.map((x) => [x]), delay: fc.nat({ max: 12 }) }),
  fc.record({ kind: fc.constant("batch" as const), items: fc.array(item, { minLength: 1, maxLength: 6 }), delay: fc.nat({ max: 12 }) }),
  fc.record({ kind: fc.constant("batch" as const), items: fc.array(item, { minLength: 7, maxLength: 24 }), delay: fc.nat({ max: 12 }) })
)

describe("group commit through the HTTP routes", () => {
  it.live.prop(
    "every key gets exactly one 201/processed, a failed flush answers 503 to all its members, /stats adds up",
    [fc.array(httpRequest, { minLength: 1, maxLength: 24, size: "medium" }), settings, flushPlan(sometimes)],
    ([requests, s, plan]) =>
      Effect.gen(function*() {
        const store = memoryStore(plan)
        const body = (i: number, x: { readonly key: number; readonly valid: boolean }) => ({
          topic: `t${x.key % 3}`,
          event_id: `k${Math.floor(x.key / 3)}`,
          timestamp: x.valid ? "2025-01-01T00:00:00Z" : "yesterday",
          // the request an event came from, so each flushed event can be traced back
          source: `r${i}`
        })
        const written = requests.map((r, i) =>
          r.kind === "one" && !r.items[0].valid ? 0 : new Set(r.items.filter((x) => x.valid).map((x) => keyOf(body(i, x) as NewEvent))).size
        )
        const { responses, stats } = yield* Effect.gen(function*() {
          const client = yield* HttpClient.HttpClient
          store.watch(written.reduce((a, b) => a + b, 0), (yield* Batcher).pendingEvents)
          const responses = yield* Effect.forEach(requests, (r, i) =>
            yields(r.delay).pipe(
              Effect.zipRight(client.execute(
                r.kind === "one"
                  ? HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post("/publish"), body(i, r.items[0]))
                  : HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post("/publish/batch"), r.items.map((x) => body(i, x)))
              )),
              Effect.flatMap((res) =>
                Effect.map(res.json, (json) => ({ status: res.status, retryAfter: res.headers["retry-after"], json: json as any }))
              )
            ), { concurrency: "unbounded" })
          yield* drained
          const stats = yield* Effect.flatMap(client.get("/stats"), (res) => res.json)
          return { responses, stats: stats as any }
        }).pipe(Effect.provide(httpOver(store.layer, envOf(s))))

        // where each written (request, key) went
        const placed = new Map<string, { readonly flush: Flush; readonly index: number }>()
        for (const flush of store.flushes) {
          expect(flush.outcome).not.toBe("open")
          flush.members.forEach((e, index) => {
            const id = `${e.source}|${keyOf(e)}`
            expect(placed.has(id), `${id} was flushed twice`).toBe(false)
            placed.set(id, { flush, index })
          })
        }

        const processedBy = new Map<string, Array<number>>()
        let processed = 0, duplicates = 0, rejected = 0, storageFailures = 0
        requests.forEach((r, i) => {
          const res = responses[i]
          const firstOf = new Map<string, number>()
          r.items.forEach((x, j) => {
            const key = keyOf(body(i, x) as NewEvent)
            if (x.valid && !firstOf.has(key)) firstOf.set(key, j)
          })
          expect(firstOf.size).toBe(written[i])
          const where = [...firstOf.keys()].map((key) => placed.get(`r${i}|${key}`))
          where.forEach((p) => expect(p, `request ${i} lost an event`).toBeDefined())
          const told = (key: string) => {
            const { flush, index } = placed.get(`r${i}|${key}`)!
            return flush.answers[index]
          }
          if (r.kind === "one" && !r.items[0].valid) {
            expect(res.status).toBe(422)
            rejected++
          } else if (where.some((p) => p?.flush.outcome === "failed")) {
            expect(res.status, `request ${i} shared a failed flush`).toBe(503)
            expect(res.retryAfter).toBeDefined()
            storageFailures += firstOf.size
          } else if (r.kind === "one") {
            const key = [...firstOf.keys()][0]
            const isNew = told(key)
            expect(res.status).toBe(isNew ? 201 : 200)
            expect(res.json.status).toBe(isNew ? "processed" : "dropped_duplicate")
            if (isNew) processedBy.set(key, [...(processedBy.get(key) ?? []), i])
            isNew ? processed++ : duplicates++
          } else {
            expect(res.status).toBe(200)
            const statuses = r.items.map((x, j) => {
              const key = keyOf(body(i, x) as NewEvent)
              if (!x.valid) return "rejected"
              if (firstOf.get(key) !== j || !told(key)) return "dropped_duplicate"
              processedBy.set(key, [...(processedBy.get(key) ?? []), i])
              return "processed"
            })
            expect(res.json.results.map((x: { status: string }) => x.status)).toEqual(statuses)
            const count = (status: string) => statuses.filter((x) => x === status).length
            expect([res.json.processed, res.json.duplicates, res.json.rejected]).toEqual([count("processed"), count("dropped_duplicate"), count("rejected")])
            processed += count("processed")
            duplicates += count("dropped_duplicate")
            rejected += count("rejected")
          }
        })
        expect(placed.size, "the store received something no request wrote").toBe(written.reduce((a, b) => a + b, 0))

        // exactly one processed answer per key that a committed flush holds, to the request that stored it;
        // none for a key only ever in failed flushes
        const committedKeys = new Set(store.flushes.filter((f) => f.outcome === "committed").flatMap((f) => f.members.map(keyOf)))
        expect(new Set(store.winners.keys())).toEqual(committedKeys)
        for (const key of new Set(requests.flatMap((r, i) => r.items.filter((x) => x.valid).map((x) => keyOf(body(i, x) as NewEvent))))) {
          const winner = store.winners.get(key)
          expect(processedBy.get(key) ?? [], `${key}: requests answered "processed"`).toEqual(winner === undefined ? [] : [Number(winner.source?.slice(1))])
        }

        const u = stats.uptime_stats
        expect(u.received).toBe(u.unique_processed + u.duplicate_dropped + u.rejected)
        expect([u.unique_processed, u.duplicate_dropped, u.rejected]).toEqual([processed, duplicates, rejected])
        expect(u.unique_processed).toBe(store.winners.size)
        expect(stats.database_total_rows).toBe(store.winners.size)
        expect(stats.storage_failures).toBe(storageFailures)
      }),
    // a failure found late is still reported, with the smallest case shrunk to in the time left
    { timeout: 90_000, fastCheck: { numRuns: 40, interruptAfterTimeLimit: 45_000 } }
  )
})

// ---- Against PostgreSQL ----------------------------------------------------------------------------------

/**
 * A fresh database whose `events` table refuses, by trigger, any row whose topic is listed in `poison`:
 * a flush holding such a row fails inside PostgreSQL and must roll back whole.
 */
const poisonedPostgres = Layer.unwrapScoped(
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(Effect.promise(() => freshDatabase("batchprop")), (d) => Effect.promise(() => d.drop()))
    const setup = Effect.gen(function*() {
      yield* (yield* Database).awaitConnected
      yield* Effect.promise(() =>
        query(
          db.url,
          `CREATE TABLE poison (topic text PRIMARY KEY);
           CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             IF EXISTS (SELECT 1 FROM poison WHERE topic = NEW.topic) THEN
               RAISE EXCEPTION 'poisoned topic %', NEW.topic;
             END IF;
             RETURN NEW;
           END $$;
           CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison();`
        )
      )
      return { url: db.url }
    })
    return Layer.effect(PoisonedDatabase, setup).pipe(
      Layer.provideMerge(EventStore.Default),
      Layer.provideMerge(Database.Default),
      Layer.provide(configLayer({ DATABASE_URL: db.url }))
    )
  })
)

class PoisonedDatabase extends Effect.Tag("test/PoisonedDatabase")<PoisonedDatabase, { readonly url: string }>() {}

let pgCase = 0

describe.skipIf(skipWithoutPostgres)(`Batcher against PostgreSQL${withoutPostgresNote}`, () => {
  layer(poisonedPostgres, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("concurrent overlapping submissions store each key once; a failing flush rolls back whole", () =>
      Effect.gen(function*() {
        const { url } = yield* PoisonedDatabase
        const store = yield* EventStore
        yield* Effect.gen(function*() {
          const subs = Array.from({ length: 300 }, (_, i) => [i % 97, (i * 7) % 131, (i * 13) % 89])
          const answers = yield* submitAll(subs.map(() => ({ delay: 0 })), subs.map((keys) => keys.map((k) => ev(k, "pg"))))
          const reported = answers.flatMap((a) => Either.isRight(a) ? a.right.filter(Boolean) : [])
          const distinct = new Set(subs.flat()).size
          expect(answers.every(Either.isRight)).toBe(true)
          expect(reported.length).toBe(distinct)
          const rows = yield* Effect.promise(() => query(url, "SELECT count(*)::int AS n FROM events WHERE topic = 'pg'"))
          expect(rows[0].n).toBe(distinct)
          const before = yield* Effect.promise(() => query(url, "SELECT sum(total)::int AS n FROM event_totals"))

          // One event PostgreSQL refuses poisons its whole flush: nothing of that transaction is stored.
          const batcher = yield* Batcher
          const bad = { ...ev(1, "rollback"), timestamp: "not a time" }
          const failed = yield* Effect.either(batcher.submit([ev(0, "rollback"), bad, ev(2, "rollback")]))
          expect(Either.isLeft(failed) && failed.left._tag).toBe("StorageUnavailable")
          const after = yield* Effect.promise(() => query(url, "SELECT count(*)::int AS n FROM events WHERE topic = 'rollback'"))
          expect(after[0].n).toBe(0)
          const totalsAfter = yield* Effect.promise(() => query(url, "SELECT sum(total)::int AS n FROM event_totals"))
          expect(totalsAfter[0].n).toBe(before[0].n)
        }).pipe(
          Effect.provide(Batcher.DefaultWithoutDependencies.pipe(Layer.provide(Broker.Default), 
            Layer.provide(Layer.succeed(EventStore, store)),
            Layer.provide(configLayer({ FLUSH_MAX_EVENTS: "50", FLUSH_CONCURRENCY: "3" }))
          )),
          Logger.withMinimumLogLevel(LogLevel.None)
        )
      }))

    it.effect.prop(
      "any generated interleaving with a poisoned topic: failed flushes leave no rows, the total moves by the rows stored",
      [submissions, settings, flushPlan(fc.constant(false)), fc.option(fc.nat({ max: 2 }), { nil: undefined })],
      ([subs, s, plan, poisonIndex]) =>
        Effect.gen(function*() {
          const { url } = yield* PoisonedDatabase
          const real = yield* EventStore
          const prefix = `c${pgCase++}_`
          if (poisonIndex !== undefined) {
            yield* Effect.promise(() => query(url, "INSERT INTO poison (topic) VALUES ($1)", [`${prefix}t${poisonIndex}`]))
          }
          const totalBefore = yield* real.totalRows
          const recorder = recording(real.insertMany, plan)
          const events = subs.map((x) => x.keys.map((k) => keyed(k, prefix)))
          const answers = yield* submitAll(subs, events, recorder).pipe(
            Effect.tap(() => drained),
            Effect.provide(Batcher.DefaultWithoutDependencies.pipe(Layer.provide(Broker.Default), 
              Layer.provide(Layer.succeed(EventStore, EventStore.make({ ...real, insertMany: recorder.insertMany }))),
              Layer.provide(configLayer(envOf(s)))
            )),
            // the refused rows are logged as storage failures; here they are the point, not news
            Logger.withMinimumLogLevel(LogLevel.None)
          )
          const { committedKeys } = checkAgainstFlushes(events, answers, recorder.flushes)
          if (poisonIndex !== undefined && subs.some((x) => x.keys.some((k) => k % 3 === poisonIndex))) {
            expect(recorder.flushes.some((f) => f.outcome === "failed")).toBe(true)
          }

          // the rows are exactly the keys of committed flushes: nothing of a failed flush that did not also commit
          const rows = yield* Effect.promise(() =>
            query<{ topic: string; event_id: string }>(url, "SELECT topic, event_id FROM events WHERE starts_with(topic, $1)", [prefix])
          )
          expect(new Set(rows.map((r) => eventKey(r.topic, r.event_id)))).toEqual(committedKeys)
          expect(rows.length).toBe(committedKeys.size)
          const totalAfter = yield* real.totalRows
          expect(totalAfter - totalBefore).toBe(committedKeys.size)
          const counted = yield* Effect.promise(() => query(url, "SELECT count(*)::int AS n FROM events"))
          expect(counted[0].n).toBe(totalAfter)
        }),
      { timeout: 90_000, fastCheck: { numRuns: 25, interruptAfterTimeLimit: 45_000 } }
    )
  })
})

describe("the busy window (FLUSH_BUSY_WINDOW_MS)", () => {
  // Three submissions: one of `first` events, then two single events 50 ms apart. Returns the flushes' sizes.
  const flushSizes = (first: number, env: Record<string, string>) =>
    Effect.gen(function*() {
      const sizes: Array<number> = []
      const store = eventStoreTest(
        (events) => Effect.sync(() => (sizes.push(events.length), events.map(() => undefined))),
        Effect.succeed(0)
      )
      yield* Effect.gen(function*() {
        const batcher = yield* Batcher
        yield* batcher.submit(Array.from({ length: first }, (_, i) => keyed(i, "a")))
        const second = yield* Effect.fork(batcher.submit([keyed(0, "b")]))
        yield* Effect.sleep("50 millis")
        yield* batcher.submit([keyed(0, "c")])
        yield* second.await
      }).pipe(
        Effect.provide(Batcher.DefaultWithoutDependencies.pipe(
          Layer.provide(Broker.Default),
          Layer.provide(store),
          Layer.provide(configLayer({ FLUSH_BUSY_EVENTS: "2", ...env }))
        ))
      )
      return sizes
    })

  it.live("after a flush of at least FLUSH_BUSY_EVENTS, the next waits for more; after a small one it does not", () =>
    Effect.gen(function*() {
      expect(yield* flushSizes(3, { FLUSH_BUSY_WINDOW_MS: "300" })).toEqual([3, 2])
      expect(yield* flushSizes(1, { FLUSH_BUSY_WINDOW_MS: "300" })).toEqual([1, 1, 1])
      expect(yield* flushSizes(3, { FLUSH_BUSY_WINDOW_MS: "0" })).toEqual([3, 1, 1])
    }))
})
