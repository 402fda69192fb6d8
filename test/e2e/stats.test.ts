import { expect, layer } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import type { Stats } from "../../src/domain/Event.js"
import { event, get, post, uniqueTopic } from "./support/http.js"
import { E2e, E2eLive } from "./support/target.js"

const snapshot = Effect.flatMap(E2e, ({ client }) => client.health.stats())

const expectConsistent = (s: Stats) => {
  const u = s.uptime_stats
  expect(u.received).toBe(u.unique_processed + u.duplicate_dropped + u.rejected)
}

interface Expected {
  readonly unique_processed: number
  readonly duplicate_dropped: number
  readonly rejected: number
  readonly rows: number
}

/**
 * Counter deltas equal what this case sent when the server is this file's own; against a shared server
 * other traffic can only add, so they are at least that.
 */
const expectDeltas = (before: Stats, after: Stats, expected: Expected) =>
  Effect.gen(function*() {
    const { exclusive } = yield* E2e
    expectConsistent(after)
    const delta = (k: keyof Stats["uptime_stats"]) => after.uptime_stats[k] - before.uptime_stats[k]
    const received = expected.unique_processed + expected.duplicate_dropped + expected.rejected
    const rows = after.database_total_rows! - before.database_total_rows!
    const actual = {
      received: delta("received"),
      unique_processed: delta("unique_processed"),
      duplicate_dropped: delta("duplicate_dropped"),
      rejected: delta("rejected"),
      rows
    }
    const wanted = { received, ...expected }
    if (exclusive) {
      expect(actual).toEqual(wanted)
    } else {
      for (const k of Object.keys(wanted) as Array<keyof typeof wanted>) expect(actual[k], k).toBeGreaterThanOrEqual(wanted[k])
    }
  })

const topicRows = (topic: string) =>
  Effect.map(get(`/events?topic=${encodeURIComponent(topic)}&limit=1000`), (res) => res.json.length as number)

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: statistics", (it) => {
  it.effect("GET /stats has every documented field and received = unique + duplicates + rejected", () =>
    Effect.gen(function*() {
      const stats = yield* snapshot
      expect(stats.service).toBe("aggregator")
      expect(typeof stats.database_total_rows).toBe("number")
      expect(stats.storage_failures).toBeGreaterThanOrEqual(0)
      expect(Number.isNaN(Date.parse(stats.started_at))).toBe(false)
      expectConsistent(stats)
      const raw = (yield* get("/stats")).json
      expect(Object.keys(raw).sort()).toEqual(
        [
          "announcements",
          "cluster",
          "database_total_rows",
          "retention",
          "service",
          "started_at",
          "storage_failures",
          "stream_clients",
          "uptime_seconds",
          "uptime_stats"
        ]
      )
      expect(Object.keys(raw.uptime_stats).sort()).toEqual(["duplicate_dropped", "received", "rejected", "unique_processed"])
    }))

  it.effect("single publishes move the counters by what clients were told; the topic holds exactly the new events", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("stats")
      const before = yield* snapshot
      for (const id of ["a", "b", "c"]) expect((yield* post("/publish", event(topic, id))).status).toBe(201)
      for (const id of ["a", "c"]) expect((yield* post("/publish", event(topic, id))).status).toBe(200)
      expect((yield* post("/publish", { topic, event_id: "d" })).status).toBe(422)
      const after = yield* snapshot
      yield* expectDeltas(before, after, { unique_processed: 3, duplicate_dropped: 2, rejected: 1, rows: 3 })
      expect(yield* topicRows(topic)).toBe(3)
    }))

  it.effect("every refused POST /publish counts as one rejected event: 422, 415 and 413", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("refused")
      const before = yield* snapshot
      expect((yield* post("/publish", "not json")).status).toBe(422)
      expect((yield* post("/publish", event(topic, "e", { timestamp: "never" }))).status).toBe(422)
      expect((yield* post("/publish", event(topic, "e"), { "content-type": "text/plain" })).status).toBe(415)
      expect((yield* post("/publish", event(topic, "e", { pad: "x".repeat(1024 * 1024) }))).status).toBe(413)
      const after = yield* snapshot
      yield* expectDeltas(before, after, { unique_processed: 0, duplicate_dropped: 0, rejected: 4, rows: 0 })
      expect(yield* topicRows(topic)).toBe(0)
    }))

  it.effect("a batch is counted item by item", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("batch-stats")
      expect((yield* post("/publish", event(topic, "old"))).status).toBe(201)
      const before = yield* snapshot
      const res = yield* post("/publish/batch", [
        event(topic, "n1"),
        event(topic, "n2"),
        event(topic, "n1"),
        event(topic, "old"),
        { topic },
        "not an event"
      ])
      expect(res.json).toMatchObject({ received: 6, processed: 2, duplicates: 2, rejected: 2 })
      const after = yield* snapshot
      yield* expectDeltas(before, after, { unique_processed: 2, duplicate_dropped: 2, rejected: 2, rows: 2 })
      expect(yield* topicRows(topic)).toBe(3)
    }))

  it.effect("uptime moves forward and started_at stays put", () =>
    Effect.gen(function*() {
      const first = yield* snapshot
      expect((yield* post("/publish", event(uniqueTopic("uptime"), "e"))).status).toBe(201)
      const second = yield* snapshot
      expect(second.started_at).toBe(first.started_at)
      expect(second.uptime_seconds).toBeGreaterThanOrEqual(first.uptime_seconds)
      expect(second.uptime_stats.received).toBeGreaterThan(first.uptime_stats.received)
    }))

  it.effect.prop(
    "any concurrent mix of new, duplicate and invalid events: counters match the answers, rows match the distinct keys",
    [fc.array(
      fc.record({ key: fc.integer({ min: 0, max: 9 }), valid: fc.boolean(), inBatch: fc.boolean() }),
      { minLength: 1, maxLength: 30 }
    )],
    ([ops]) =>
      Effect.gen(function*() {
        const topic = uniqueTopic("prop")
        const before = yield* snapshot
        const bodies = ops.map((op) => op.valid ? event(topic, `k${op.key}`) : { topic, event_id: `k${op.key}` })
        const singles = bodies.filter((_, i) => !ops[i].inBatch)
        const batch = bodies.filter((_, i) => ops[i].inBatch)
        const [answers, batchAnswer] = yield* Effect.all([
          Effect.forEach(singles, (b) => post("/publish", b), { concurrency: "unbounded" }),
          batch.length > 0 ? post("/publish/batch", { events: batch }) : Effect.succeed(undefined)
        ], { concurrency: "unbounded" })
        const told = { unique_processed: 0, duplicate_dropped: 0, rejected: 0 }
        for (const a of answers) {
          if (a.status === 201) told.unique_processed++
          else if (a.status === 200 && a.json.status === "dropped_duplicate") told.duplicate_dropped++
          else if (a.status === 422) told.rejected++
          else expect.unreachable(`unexpected answer ${a.status} ${a.text}`)
        }
        if (batchAnswer !== undefined) {
          expect(batchAnswer.status).toBe(200)
          told.unique_processed += batchAnswer.json.processed
          told.duplicate_dropped += batchAnswer.json.duplicates
          told.rejected += batchAnswer.json.rejected
        }
        const distinct = new Set(ops.filter((o) => o.valid).map((o) => o.key)).size
        expect(told.unique_processed).toBe(distinct)
        expect(told.rejected).toBe(ops.filter((o) => !o.valid).length)
        const after = yield* snapshot
        yield* expectDeltas(before, after, { ...told, rows: distinct })
        expect(yield* topicRows(topic)).toBe(distinct)
      }),
    { fastCheck: { numRuns: 15 } }
  )
})
