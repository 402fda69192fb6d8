import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Deferred, Effect, Either, Exit, FastCheck as fc, Layer } from "effect"
import { Batcher } from "../src/aggregator/Batcher.js"
import { AggregatorConfig } from "../src/aggregator/Config.js"
import { Database } from "../src/aggregator/Database.js"
import { eventKey, EventStore, type NewEvent } from "../src/aggregator/EventStore.js"
import { StorageUnavailable } from "../src/domain/Errors.js"
import { skipWithoutPostgres, withoutPostgresNote } from "./support/backends.js"
import { freshDatabase, query } from "./support/database.js"

const ev = (key: number, topic = "t"): NewEvent => ({
  topic,
  event_id: `k${key}`,
  timestamp: "2025-01-01T00:00:00Z",
  source: null,
  payload: null
})

const configLayer = (env: Record<string, string>) =>
  AggregatorConfig.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

/** An in-memory, atomic store: a flush either stores all its new keys or nothing. */
const memoryStore = (options: { readonly failWhen?: (events: ReadonlyArray<NewEvent>) => boolean; readonly gate?: Deferred.Deferred<void> } = {}) => {
  const stored = new Set<string>()
  const flushes: Array<{ readonly keys: ReadonlyArray<string>; readonly ok: boolean }> = []
  const layer = Layer.succeed(
    EventStore,
    EventStore.make({
      insertMany: (events) =>
        Effect.gen(function*() {
          if (options.gate) yield* Deferred.await(options.gate)
          const keys = events.map((e) => eventKey(e.topic, e.event_id))
          if (options.failWhen?.(events)) {
            flushes.push({ keys, ok: false })
            return yield* new StorageUnavailable({ message: "injected" })
          }
          flushes.push({ keys, ok: true })
          return keys.map((k) => stored.has(k) ? false : (stored.add(k), true))
        }),
      list: () => Effect.succeed([]),
      get: () => Effect.succeed(undefined),
      totalRows: Effect.succeed(stored.size)
    })
  )
  return { stored, flushes, layer }
}

const submissions = fc.array(fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 6 }), {
  minLength: 1,
  maxLength: 60
})
const settings = fc.record({
  groupCommit: fc.boolean(),
  flushMaxEvents: fc.integer({ min: 1, max: 12 }),
  flushConcurrency: fc.integer({ min: 1, max: 4 }),
  flushWindowMs: fc.constantFrom(0, 0, 1)
})

const envOf = (s: typeof settings extends fc.Arbitrary<infer A> ? A : never) => ({
  GROUP_COMMIT: String(s.groupCommit),
  FLUSH_MAX_EVENTS: String(s.flushMaxEvents),
  FLUSH_CONCURRENCY: String(s.flushConcurrency),
  FLUSH_WINDOW_MS: String(s.flushWindowMs)
})

const submitAll = (subs: ReadonlyArray<ReadonlyArray<number>>, topic = "t") =>
  Effect.flatMap(Batcher, (batcher) =>
    Effect.forEach(subs, (keys) => Effect.either(batcher.submit(keys.map((k) => ev(k, topic)))), {
      concurrency: "unbounded"
    }))

describe("Batcher (group commit)", () => {
  it.live.prop(
    "any interleaving: every key is reported stored exactly once, and it is stored",
    [submissions, settings],
    ([subs, s]) =>
      Effect.gen(function*() {
        const store = memoryStore()
        const answers = yield* submitAll(subs).pipe(
          Effect.provide(Batcher.Default.pipe(Layer.provide(store.layer), Layer.provide(configLayer(envOf(s)))))
        )
        const storedBy = new Map<string, number>()
        answers.forEach((a, i) => {
          expect(Either.isRight(a)).toBe(true)
          if (Either.isLeft(a)) return
          expect(a.right.length).toBe(subs[i].length)
          a.right.forEach((isNew, j) => {
            const key = eventKey("t", `k${subs[i][j]}`)
            if (isNew) storedBy.set(key, (storedBy.get(key) ?? 0) + 1)
          })
        })
        const distinct = new Set(subs.flat().map((k) => eventKey("t", `k${k}`)))
        expect([...storedBy.values()].every((n) => n === 1)).toBe(true)
        expect(new Set(storedBy.keys())).toEqual(distinct)
        expect(store.stored).toEqual(distinct)
        // with gathering off, no flush mixes two submissions (a large one is still split at the cap)
        if (!s.groupCommit) {
          expect(store.flushes.length).toBe(subs.reduce((n, x) => n + Math.ceil(x.length / s.flushMaxEvents), 0))
        }
        expect(Math.max(...store.flushes.map((f) => f.keys.length))).toBeLessThanOrEqual(
          Math.max(s.flushMaxEvents, ...subs.map((x) => Math.min(x.length, s.flushMaxEvents)))
        )
      }),
    { fastCheck: { numRuns: 60 } }
  )

  it.live.prop(
    "a failed flush answers 503 to all its members and stores none of their events",
    [submissions, settings, fc.integer({ min: 0, max: 30 })],
    ([subs, s, poison]) =>
      Effect.gen(function*() {
        const store = memoryStore({ failWhen: (events) => events.some((e) => e.event_id === `k${poison}`) })
        const answers = yield* submitAll(subs).pipe(
          Effect.provide(Batcher.Default.pipe(Layer.provide(store.layer), Layer.provide(configLayer(envOf(s)))))
        )
        answers.forEach((a, i) => {
          const hasPoison = subs[i].includes(poison)
          if (hasPoison) {
            expect(Either.isLeft(a)).toBe(true)
            if (Either.isLeft(a)) expect(a.left._tag).toBe("StorageUnavailable")
          }
          if (Either.isRight(a)) {
            // every event reported new is really stored
            a.right.forEach((isNew, j) => {
              if (isNew) expect(store.stored.has(eventKey("t", `k${subs[i][j]}`))).toBe(true)
            })
          }
        })
        expect(store.stored.has(eventKey("t", `k${poison}`))).toBe(false)
        // every stored key came from a flush that succeeded
        const okKeys = new Set(store.flushes.filter((f) => f.ok).flatMap((f) => f.keys))
        for (const k of store.stored) expect(okKeys.has(k)).toBe(true)
      }),
    { fastCheck: { numRuns: 60 } }
  )

  it.live("past the pending cap a submission is refused with Overloaded at once, and the rest still commit", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const store = memoryStore({ gate })
      yield* Effect.gen(function*() {
        const batcher = yield* Batcher
        const first = yield* Effect.fork(batcher.submit([ev(1), ev(2), ev(3)]))
        const second = yield* Effect.fork(batcher.submit([ev(4), ev(5)]))
        yield* Effect.sleep("20 millis")
        expect(yield* batcher.pendingEvents).toBe(5)
        const refused = yield* Effect.either(batcher.submit([ev(6)]))
        expect(Either.isLeft(refused) && refused.left._tag).toBe("Overloaded")
        yield* Deferred.succeed(gate, undefined)
        expect(yield* first.await).toEqual(Exit.succeed([true, true, true]))
        expect(yield* second.await).toEqual(Exit.succeed([true, true]))
        expect(yield* batcher.pendingEvents).toBe(0)
        expect(yield* batcher.submit([ev(6)])).toEqual([true])
      }).pipe(
        Effect.provide(Batcher.Default.pipe(
          Layer.provide(store.layer),
          Layer.provide(configLayer({ MAX_PENDING_EVENTS: "5", FLUSH_CONCURRENCY: "1" }))
        ))
      )
    }))

  it.live.skipIf(skipWithoutPostgres)(`against PostgreSQL${withoutPostgresNote}: concurrent overlapping submissions store each key once; a failing flush rolls back whole`, () =>
    Effect.gen(function*() {
      const db = yield* Effect.acquireRelease(Effect.promise(() => freshDatabase("batch")), (d) => Effect.promise(() => d.drop()))
      const layer = Batcher.Default.pipe(
        Layer.provideMerge(EventStore.Default),
        Layer.provideMerge(Database.Default),
        Layer.provide(configLayer({ DATABASE_URL: db.url, FLUSH_MAX_EVENTS: "50", FLUSH_CONCURRENCY: "3" }))
      )
      yield* Effect.gen(function*() {
        const database = yield* Database
        yield* database.awaitConnected
        const subs = Array.from({ length: 300 }, (_, i) => [i % 97, (i * 7) % 131, (i * 13) % 89])
        const answers = yield* submitAll(subs, "pg")
        const reported = answers.flatMap((a) => Either.isRight(a) ? a.right.filter(Boolean) : [])
        const distinct = new Set(subs.flat()).size
        expect(answers.every(Either.isRight)).toBe(true)
        expect(reported.length).toBe(distinct)
        const rows = yield* Effect.promise(() => query(db.url, "SELECT count(*)::int AS n FROM events WHERE topic = 'pg'"))
        expect(rows[0].n).toBe(distinct)
        const totals = yield* Effect.promise(() => query(db.url, "SELECT sum(total)::int AS n FROM event_totals"))
        expect(totals[0].n).toBe(distinct)

        // One event PostgreSQL refuses poisons its whole flush: nothing of that transaction is stored.
        const batcher = yield* Batcher
        const bad = { ...ev(1, "rollback"), timestamp: "not a time" }
        const failed = yield* Effect.either(batcher.submit([ev(0, "rollback"), bad, ev(2, "rollback")]))
        expect(Either.isLeft(failed) && failed.left._tag).toBe("StorageUnavailable")
        const after = yield* Effect.promise(() => query(db.url, "SELECT count(*)::int AS n FROM events WHERE topic = 'rollback'"))
        expect(after[0].n).toBe(0)
        const totalsAfter = yield* Effect.promise(() => query(db.url, "SELECT sum(total)::int AS n FROM event_totals"))
        expect(totalsAfter[0].n).toBe(distinct)
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped))
})
