import { payloadProblem, type StoredEvent } from "../../../src/domain/Event.js"
import { describe, expect, layer } from "@effect/vitest"
import { ConfigProvider, Effect, FastCheck as fc, Layer } from "effect"
import { AggregatorConfig } from "../../../src/aggregator/Config.js"
import { Database } from "../../../src/aggregator/storage/Database.js"
import { EventStore, type NewEvent } from "../../../src/aggregator/storage/EventStore.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase } from "../../support/database.js"

// One suite, two backends: the PostgreSQL server and the embedded PGlite must behave the same.

const ev = (topic: string, key: number | string, extra: Partial<NewEvent> = {}): NewEvent => ({
  topic,
  event_id: `k${key}`,
  timestamp: "2025-01-01T00:00:00.000001Z",
  source: null,
  payload: null,
  ...extra
})

interface Backend {
  readonly name: string
  readonly skip: boolean
  readonly env: Effect.Effect<Record<string, string>, never, import("effect/Scope").Scope>
}

const backends: ReadonlyArray<Backend> = [
  {
    name: `PostgreSQL server${withoutPostgresNote}`,
    skip: skipWithoutPostgres,
    env: Effect.map(
      Effect.acquireRelease(Effect.promise(() => freshDatabase("store")), (db) => Effect.promise(() => db.drop())),
      (db) => ({ DATABASE_URL: db.url })
    )
  },
  { name: "embedded PGlite", skip: false, env: Effect.succeed({ DATA_DIR: "memory://" }) }
]

const storeLayer = (backend: Backend) =>
  Layer.unwrapScoped(Effect.map(backend.env, (env) =>
    EventStore.Default.pipe(
      Layer.provideMerge(Database.Default),
      Layer.provide(AggregatorConfig.Default),
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
    )))

const isStored = (row: StoredEvent | undefined) => row !== undefined

for (const backend of backends) {
  describe.skipIf(backend.skip)(`EventStore on ${backend.name}`, () => {
    layer(storeLayer(backend), { timeout: "120 seconds", excludeTestServices: true })((it) => {
      it.effect("connects and migrates", () =>
        Effect.gen(function*() {
          yield* (yield* Database).awaitConnected
          expect(yield* (yield* EventStore).totalRows).toBe(0)
        }), 120_000)

      it.effect("stores a key once; the same id under another topic is another event; in-batch repeats are duplicates", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const first = yield* store.insertMany([ev("a", 1), ev("a", 2), ev("a", 1), ev("b", 1)])
          expect(first.map(isStored)).toEqual([true, true, false, true])
          expect((yield* store.insertMany([ev("a", 1), ev("a", 3)])).map(isStored)).toEqual([false, true])
          const got = yield* store.get("a", "k1")
          expect(got).toMatchObject({ topic: "a", event_id: "k1", timestamp: "2025-01-01T00:00:00.000001Z", source: null, payload: null })
          // what insertMany returns for a position is the row stored for it
          expect(first[0]).toEqual(got)
          expect(first[3]).toEqual(yield* store.get("b", "k1"))
          expect(yield* store.get("a", "missing")).toBeUndefined()
        }))

      it.effect("payloads and sources round-trip; listing is newest first, filtered and paged", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const payload = { deep: [1, "two", { three: null, "ключ": "值 🚀" }], n: 1.5 }
          yield* store.insertMany([
            ev("list", 1, { source: "s1", payload: JSON.stringify(payload) }),
            ev("list", 2),
            ev("list", 3)
          ])
          const got = yield* store.get("list", "k1")
          expect(got?.payload).toEqual(payload)
          expect(got?.source).toBe("s1")
          const page = yield* store.list({ topic: "list", limit: 2 })
          expect(page.map((e) => e.event_id)).toEqual(["k3", "k2"])
          const rest = yield* store.list({ topic: "list", limit: 2, before: page[1].seq })
          expect(rest.map((e) => e.event_id)).toEqual(["k1"])
        }))

      it.effect.prop(
        "pages within a byte budget: at least one event, never past the budget otherwise; followed by `before` they list every event once, newest first",
        [
          fc.array(fc.integer({ min: 0, max: 20_000 }), { minLength: 0, maxLength: 60 }),
          fc.integer({ min: 1, max: 80 }),
          fc.integer({ min: 1, max: 60_000 })
        ],
        ([sizes, limit, maxBytes]) =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const topic = `page-${Math.random().toString(36).slice(2)}`
            // inserted one at a time, so seq order is the key order
            for (const [i, size] of sizes.entries()) {
              yield* store.insertMany([ev(topic, i, { payload: JSON.stringify("p".repeat(size)) })])
            }
            const seen: Array<string> = []
            let before: number | undefined
            for (let pages = 0; ; pages++) {
              expect(pages).toBeLessThanOrEqual(sizes.length + 1)
              const page = yield* store.page({ topic, limit, maxBytes, ...(before !== undefined ? { before } : {}) })
              const events = page.events.map((text) => JSON.parse(text) as StoredEvent)
              const more = page.more
              if (more) expect(page.last).toBe(events[events.length - 1].seq)
              expect(events.length).toBeLessThanOrEqual(limit)
              // each event counts as its payload's JSON text plus 256 bytes for the other fields
              const bytes = events.reduce((sum, e) => sum + JSON.stringify(e.payload).length + 256, 0)
              if (events.length > 1) expect(bytes).toBeLessThanOrEqual(maxBytes)
              seen.push(...events.map((e) => e.event_id))
              if (!more) break
              expect(events.length).toBeGreaterThan(0)
              before = events[events.length - 1].seq
            }
            expect(seen).toEqual(sizes.map((_, i) => `k${i}`).reverse())
          }),
        { fastCheck: { numRuns: 12 } }
      )

      it.effect("a transaction that fails stores nothing and does not move the total", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const before = yield* store.totalRows
          const failed = yield* Effect.either(store.insertMany([ev("rb", 1), ev("rb", 2, { timestamp: "not a time" })]))
          expect(failed._tag).toBe("Left")
          expect(yield* store.get("rb", "k1")).toBeUndefined()
          expect(yield* store.totalRows).toBe(before)
        }))

      it.effect.prop(
        "concurrent overlapping writers: each key reported new exactly once, stored once, total exact",
        [fc.array(fc.array(fc.integer({ min: 0, max: 40 }), { minLength: 1, maxLength: 8 }), { minLength: 1, maxLength: 30 })],
        ([batches]) =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const topic = `conc-${Math.random().toString(36).slice(2)}`
            const before = yield* store.totalRows
            const answers = yield* Effect.forEach(batches, (keys) => store.insertMany(keys.map((k) => ev(topic, k))), {
              concurrency: "unbounded"
            })
            answers.forEach((a, i) =>
              a.forEach((row, j) => {
                if (row !== undefined) expect(row.event_id).toBe(`k${batches[i][j]}`)
              })
            )
            const reportedNew = answers.flatMap((a, i) => a.flatMap((row, j) => row !== undefined ? [batches[i][j]] : []))
            const distinct = new Set(batches.flat())
            expect(reportedNew.length).toBe(distinct.size)
            expect(new Set(reportedNew)).toEqual(distinct)
            expect((yield* store.totalRows) - before).toBe(distinct.size)
            const listed = yield* store.list({ topic, limit: 1000 })
            expect(listed.length).toBe(distinct.size)
            // the topic's total, kept by every writer's transaction, is exact too
            const summary = (yield* store.topics).find((t) => t.topic === topic)
            expect(summary?.events).toBe(distinct.size)
            const received = listed.map((e) => e.received_at).sort()
            expect(summary?.first_received_at).toBe(received[0])
            expect(summary?.last_received_at).toBe(received[received.length - 1])
          }),
        { fastCheck: { numRuns: 15 } }
      )

      it.effect("forgetDeleted: after a DELETE in the same transaction, the totals and the topics match what is left", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const db = yield* Database
          const [kept, emptied] = [`keep-${Math.random().toString(36).slice(2)}`, `empty-${Math.random().toString(36).slice(2)}`]
          // three transactions, so the kept topic's rows have three received_at values and shard rows
          for (const keys of [[1, 2], [3], [4, 5]]) yield* store.insertMany(keys.map((k) => ev(kept, k)))
          yield* store.insertMany([ev(emptied, 1), ev(emptied, 2)])
          const before = yield* store.totalRows
          const all = yield* store.list({ topic: kept, limit: 10 })
          yield* db.use((sql) =>
            sql.withTransaction(Effect.gen(function*() {
              const gone = yield* sql<{ topic: string }>`
                DELETE FROM events WHERE (topic = ${kept} AND event_id IN ('k1', 'k2')) OR topic = ${emptied} RETURNING topic`
              const counts = new Map<string, number>()
              for (const row of gone) counts.set(row.topic, (counts.get(row.topic) ?? 0) + 1)
              yield* store.forgetDeleted([...counts].map(([topic, count]) => ({ topic, count })))
            }))
          )
          expect(yield* store.totalRows).toBe(before - 4)
          const topics = yield* store.topics
          expect(topics.find((t) => t.topic === emptied)).toBeUndefined()
          const left = all.filter((e) => e.event_id !== "k1" && e.event_id !== "k2")
          expect(topics.find((t) => t.topic === kept)).toEqual({
            topic: kept,
            events: 3,
            first_received_at: left[left.length - 1].received_at,
            last_received_at: left[0].received_at
          })
        }))

      it.effect.prop(
        "the JSON text the database renders for a listing parses to the same event the driver reads",
        [
          fc.array(
            fc.record({
              id: fc.fullUnicodeString({ minLength: 1, maxLength: 12 }).filter((s) => !s.includes("\u0000")),
              source: fc.option(fc.fullUnicodeString({ maxLength: 12 }).filter((s) => !s.includes("\u0000"))),
              payload: fc.jsonValue({ maxDepth: 3 }).filter((v) => payloadProblem(v) === undefined)
            }),
            { minLength: 1, maxLength: 8 }
          )
        ],
        ([items]) =>
          Effect.gen(function*() {
            const store = yield* EventStore
            const topic = `render-${Math.random().toString(36).slice(2)}`
            yield* store.insertMany(items.map((item) => ev(topic, item.id, { event_id: item.id, source: item.source, payload: JSON.stringify(item.payload) })))
            const read = yield* store.list({ topic, limit: 100 })
            const rendered = (yield* store.page({ topic, limit: 100, maxBytes: 10_000_000 })).events.map((text) => JSON.parse(text))
            expect(rendered).toEqual(read)
          }),
        { fastCheck: { numRuns: 15 } }
      )

      it.effect("filters: topic, source, since (inclusive) and until (exclusive) on the timestamp, with before", () =>
        Effect.gen(function*() {
          const store = yield* EventStore
          const topic = `filter-${Math.random().toString(36).slice(2)}`
          yield* store.insertMany([
            ev(topic, 1, { timestamp: "2025-01-01T00:00:00Z", source: "a" }),
            ev(topic, 2, { timestamp: "2025-01-02T00:00:00Z", source: "b" }),
            ev(topic, 3, { timestamp: "2025-01-03T00:00:00Z", source: "a" }),
            ev(topic, 4, { timestamp: "2025-01-04T00:00:00Z", source: null })
          ])
          const ids = (events: ReadonlyArray<{ readonly event_id: string }>) => events.map((e) => e.event_id)
          expect(ids(yield* store.list({ topic, limit: 10, source: "a" }))).toEqual(["k3", "k1"])
          expect(ids(yield* store.list({ topic, limit: 10, since: "2025-01-02T00:00:00Z", until: "2025-01-04T00:00:00Z" }))).toEqual(["k3", "k2"])
          const newest = yield* store.list({ topic, limit: 10 })
          expect(ids(yield* store.list({ topic, limit: 10, since: "2025-01-02T00:00:00Z", before: newest[1].seq }))).toEqual(["k2"])
          const page = yield* store.page({ topic, limit: 10, maxBytes: 1_000_000, ascending: true, source: "a" })
          expect(page.events.map((text) => (JSON.parse(text) as StoredEvent).event_id)).toEqual(["k1", "k3"])
          // the database renders the same JSON the schema describes, field for field
          const [one] = yield* store.list({ topic, limit: 1 })
          const rendered = (yield* store.page({ topic, limit: 1, maxBytes: 1_000_000 })).events[0]
          expect(JSON.parse(rendered)).toEqual(one)
          expect(Object.keys(JSON.parse(rendered))).toEqual(["seq", "topic", "event_id", "timestamp", "source", "payload", "received_at"])
        }))
    })
  })
}
