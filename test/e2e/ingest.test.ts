import { expect, layer } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { bodyOf, storedOf, topicOf, validEvent } from "./support/events.js"
import { authHeader, event, eventPath, get, post, TIMESTAMP, uniqueTopic } from "./support/http.js"
import { raw, rawEventPath } from "./support/raw.js"
import { E2e, E2eLive } from "./support/target.js"

const isoMicros = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/

const nested = (depth: number): unknown => {
  let v: unknown = "bottom"
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

const complexPayload = {
  order: {
    id: 981_273,
    lines: [
      { sku: "A-1", qty: 2, price: 19.99, tags: ["red", "sale"], meta: null },
      { sku: "B-2", qty: 1, price: 0.1, tags: [], meta: { gift: true, note: "" } }
    ],
    totals: { net: 40.08, tax: -0.5, big: 1e21, tiny: 1.5e-7, zero: 0 },
    flags: [true, false, null],
    empty: {},
    matrix: [[1, 2], [3, [4, [5, { deep: "yes" }]]]]
  },
  "key with spaces": "v",
  "ключ": "значение",
  "日本": ["東京", "大阪"],
  "emoji 🎉": "🚀✨",
  escaped: "quote \" backslash \\ newline \n tab \t"
}

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: ingestion", (it) => {
  it.effect("a new event is 201 processed and reads back by key with every field", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("new")
      const sent = event(topic, "evt-1", { source: "checkout", payload: { amount: 42 } })
      const res = yield* post("/publish", sent)
      expect(res.status).toBe(201)
      expect(res.json).toEqual({ status: "processed", id: "evt-1", topic })
      const stored = yield* client.events.get({ path: { topic, event_id: "evt-1" } })
      expect(stored).toMatchObject({ topic, event_id: "evt-1", timestamp: TIMESTAMP, source: "checkout", payload: { amount: 42 } })
      expect(Object.keys(stored).sort()).toEqual(["event_id", "payload", "received_at", "seq", "source", "timestamp", "topic"])
      expect(Number.isSafeInteger(stored.seq) && stored.seq > 0).toBe(true)
      expect(stored.received_at).toMatch(isoMicros)
    }))

  it.effect("the derived client publishes: processed first, dropped_duplicate after", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("client")
      const first = yield* client.events.publish({ payload: event(topic, "c1") })
      const second = yield* client.events.publish({ payload: event(topic, "c1") })
      expect(first).toEqual({ status: "processed", id: "c1", topic })
      expect(second).toEqual({ status: "dropped_duplicate", id: "c1", topic })
    }))

  it.effect("an exact duplicate is a 200 dropped_duplicate and the event is stored once", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("dup")
      const sent = event(topic, "d1", { source: "s", payload: { n: 1 } })
      expect((yield* post("/publish", sent)).status).toBe(201)
      const again = yield* post("/publish", sent)
      expect(again.status).toBe(200)
      expect(again.json).toEqual({ status: "dropped_duplicate", id: "d1", topic })
      const listed = (yield* get(`/events?topic=${topic}`)).json
      expect(listed.map((e: any) => e.event_id)).toEqual(["d1"])
    }))

  it.effect("the same key with different content is still a duplicate; the first copy is kept", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("first-wins")
      expect((yield* post("/publish", event(topic, "k", { source: "one", payload: { v: 1 } }))).status).toBe(201)
      const other = yield* post("/publish", event(topic, "k", { source: "two", payload: { v: 2 }, timestamp: "2030-01-01T00:00:00Z" }))
      expect(other.status).toBe(200)
      expect(other.json.status).toBe("dropped_duplicate")
      expect((yield* get(eventPath(topic, "k"))).json).toMatchObject({ source: "one", payload: { v: 1 }, timestamp: TIMESTAMP })
    }))

  it.effect("the same event_id in another topic is another event: both are stored", () =>
    Effect.gen(function*() {
      const a = uniqueTopic("same-id-a")
      const b = uniqueTopic("same-id-b")
      const first = yield* post("/publish", event(a, "shared", { payload: "A" }))
      const second = yield* post("/publish", event(b, "shared", { payload: "B" }))
      expect([first.status, second.status]).toEqual([201, 201])
      expect(second.json).toEqual({ status: "processed", id: "shared", topic: b })
      expect((yield* get(eventPath(a, "shared"))).json).toMatchObject({ topic: a, payload: "A" })
      expect((yield* get(eventPath(b, "shared"))).json).toMatchObject({ topic: b, payload: "B" })
    }))

  it.effect("100 concurrent identical events: exactly one 201, 99 dropped, one stored", () =>
    Effect.gen(function*() {
      const { url } = yield* E2e
      const topic = uniqueTopic("race")
      const body = JSON.stringify(event(topic, "same", { payload: { race: true } }))
      const answers = yield* Effect.promise(() =>
        Promise.all(Array.from({ length: 100 }, () =>
          fetch(`${url}/publish`, { method: "POST", headers: { "content-type": "application/json", ...authHeader }, body })
            .then(async (r) => ({ status: r.status, json: (await r.json()) as any }))))
      )
      expect(answers.filter((a) => a.status === 201)).toHaveLength(1)
      expect(answers.filter((a) => a.status === 200 && a.json.status === "dropped_duplicate")).toHaveLength(99)
      expect((yield* get(`/events?topic=${topic}`)).json).toHaveLength(1)
    }))

  it.effect("a complex nested payload round-trips unchanged", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("nested")
      expect((yield* post("/publish", event(topic, "n", { payload: complexPayload }))).status).toBe(201)
      expect((yield* get(eventPath(topic, "n"))).json.payload).toEqual(complexPayload)
    }))

  it.effect.each([
    ["an array", [1, "two", { three: 3 }]],
    ["a string", "just text"],
    ["a number", -12.5],
    ["false", false],
    ["null", null],
    ["nested 64 levels (the limit)", nested(64)]
  ])("a payload that is %s is stored as sent", ([, payload]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("payload")
      expect((yield* post("/publish", event(topic, "p", { payload }))).status).toBe(201)
      expect((yield* get(eventPath(topic, "p"))).json.payload).toEqual(payload)
    }))

  it.effect("optional fields absent: source and payload read back as null", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("minimal")
      expect((yield* post("/publish", { topic, event_id: "m", timestamp: TIMESTAMP })).status).toBe(201)
      const stored = yield* client.events.get({ path: { topic, event_id: "m" } })
      expect(stored).toMatchObject({ topic, event_id: "m", timestamp: TIMESTAMP, source: null, payload: null })
    }))

  it.effect("unknown extra fields are ignored, not stored", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("extra")
      const res = yield* post("/publish", event(topic, "x", { priority: "high", nested: { a: 1 } }))
      expect(res.status).toBe(201)
      const stored = (yield* get(eventPath(topic, "x"))).json
      expect(stored).not.toHaveProperty("priority")
      expect(stored.payload).toBeNull()
    }))

  it.effect("a 200-character topic is stored and listed by topic", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("long").padEnd(200, "x")
      expect(topic).toHaveLength(200)
      const res = yield* post("/publish", event(topic, "e"))
      expect(res.status).toBe(201)
      expect(res.json.topic).toBe(topic)
      const listed = (yield* get(`/events?topic=${encodeURIComponent(topic)}`)).json
      expect(listed.map((e: any) => [e.topic, e.event_id])).toEqual([[topic, "e"]])
    }))

  it.effect("a 200-character topic and a 255-character event_id are readable by key", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("long-key").padEnd(200, "y")
      const eventId = "i".repeat(255)
      expect((yield* post("/publish", event(topic, eventId))).status).toBe(201)
      const res = yield* get(eventPath(topic, eventId))
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ topic, event_id: eventId })
    }))

  it.effect("emoji, CJK and right-to-left text in topic, event_id and payload round-trip", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = `${uniqueTopic("uni")}-🚀-日本語-עברית`
      const eventId = "事件-🎉-مرحبا-①"
      const payload = { "名前": "太郎", "שלום": "עולם", emoji: "👩‍👩‍👧‍👦🏳️‍🌈", mixed: ["ä", "ß", "ñ", "😀"] }
      const res = yield* post("/publish", event(topic, eventId, { payload, source: "источник-📡" }))
      expect(res.status).toBe(201)
      expect(res.json).toEqual({ status: "processed", id: eventId, topic })
      const byKey = yield* get(eventPath(topic, eventId))
      expect(byKey.status).toBe(200)
      expect(byKey.json).toMatchObject({ topic, event_id: eventId, source: "источник-📡", payload })
      const viaClient = yield* client.events.get({ path: { topic, event_id: eventId } })
      expect(viaClient).toEqual(byKey.json)
      const listed = yield* client.events.list({ urlParams: { topic } })
      expect(listed.map((e) => e.event_id)).toEqual([eventId])
      expect((yield* post("/publish", event(topic, eventId))).json.status).toBe("dropped_duplicate")
    }))

  it.effect.each([
    ["2025-01-02T03:04:05", "2025-01-02T03:04:05.000000Z"],
    ["2025-01-02T03:04:05.000001+02:00", "2025-01-02T01:04:05.000001Z"],
    ["2025-01-02T03:04:05.5-05:30", "2025-01-02T08:34:05.500000Z"],
    ["2025-01-02 03:04:05Z", "2025-01-02T03:04:05.000000Z"],
    ["2024-02-29T23:59:59.999999Z", "2024-02-29T23:59:59.999999Z"],
    ["2025-01-02t03:04:05z", "2025-01-02T03:04:05.000000Z"],
    ["2025-01-02T03:04", "2025-01-02T03:04:00.000000Z"],
    ["2025-01-02T03:04:05+0530", "2025-01-01T21:34:05.000000Z"],
    ["2025-01-02T03:04:05-05", "2025-01-02T08:04:05.000000Z"],
    ["2025-06-30T12:00:00.1234567+05:30", "2025-06-30T06:30:00.123457Z"],
    ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"],
    ["0001-01-01T00:00:00-15:59", "0001-01-01T15:59:00.000000Z"],
    ["9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"],
    ["9999-12-31T23:59:59+15:59", "9999-12-31T08:00:59.000000Z"]
  ])("timestamp %s is stored as %s", ([input, stored]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("ts")
      expect((yield* post("/publish", event(topic, "t", { timestamp: input }))).status).toBe(201)
      expect((yield* get(eventPath(topic, "t"))).json.timestamp).toBe(stored)
    }))

  it.effect("a mixed batch reports each item: processed, rejected with issues, in-batch and stored duplicates", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("batch")
      expect((yield* post("/publish", event(topic, "old"))).status).toBe(201)
      const result = yield* client.events.publishBatch({
        payload: {
          events: [
            event(topic, "a", { payload: { i: 0 } }),
            { topic, timestamp: "not a time" },
            event(topic, "a", { payload: { i: 2 } }),
            event(topic, "old"),
            event(topic, "b", { source: "s", payload: [1, { x: "y" }] }),
            42,
            event(`${topic}-other`, "a")
          ]
        }
      })
      expect(result).toMatchObject({ received: 7, processed: 3, duplicates: 2, rejected: 2 })
      expect(result.results.map((r) => [r.index, r.topic, r.event_id, r.status])).toEqual([
        [0, topic, "a", "processed"],
        [1, topic, null, "rejected"],
        [2, topic, "a", "dropped_duplicate"],
        [3, topic, "old", "dropped_duplicate"],
        [4, topic, "b", "processed"],
        [5, null, null, "rejected"],
        [6, `${topic}-other`, "a", "processed"]
      ])
      expect(result.results[1].errors?.map((e) => e.path).sort()).toEqual(["event_id", "timestamp"])
      expect(result.results[5].errors?.map((e) => e.path)).toEqual([""])
      for (const r of result.results) if (r.status !== "rejected") expect(r).not.toHaveProperty("errors")
      const listed = (yield* get(`/events?topic=${topic}`)).json
      expect(listed.map((e: any) => e.event_id).sort()).toEqual(["a", "b", "old"])
      expect((yield* get(eventPath(topic, "a"))).json.payload).toEqual({ i: 0 })
    }))

  it.effect("a bare JSON array is a batch; an empty batch is a 200 with zero counts", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("bare")
      const bare = yield* post("/publish/batch", [event(topic, "1"), event(topic, "2")])
      expect(bare.status).toBe(200)
      expect(bare.json).toMatchObject({ received: 2, processed: 2, duplicates: 0, rejected: 0 })
      const empty = yield* post("/publish/batch", { events: [] })
      expect(empty.status).toBe(200)
      expect(empty.json).toEqual({ received: 0, processed: 0, duplicates: 0, rejected: 0, results: [] })
    }))

  it.effect("a batch answer is canonical JSON: application/json, the schema's keys in its order, no whitespace", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("answer")
      const res = yield* post("/publish/batch", [event(topic, "1"), { topic, event_id: "2" }, event(topic, "1"), event(topic, "ü\"\\")])
      expect(res.status).toBe(200)
      expect(res.headers.get("content-type")).toBe("application/json")
      expect(res.text).toBe(JSON.stringify(res.json))
      expect(Object.keys(res.json)).toEqual(["received", "processed", "duplicates", "rejected", "results"])
      expect(res.json.results.map((r: object) => Object.keys(r))).toEqual([
        ["index", "topic", "event_id", "status"],
        ["index", "topic", "event_id", "status", "errors"],
        ["index", "topic", "event_id", "status"],
        ["index", "topic", "event_id", "status"]
      ])
      expect(res.json.results.map((r: { status: string }) => r.status)).toEqual(["processed", "rejected", "dropped_duplicate", "processed"])
    }))

  it.effect("a batch of exactly 1000 events (the limit) is stored whole", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("thousand")
      const res = yield* post("/publish/batch", Array.from({ length: 1000 }, (_, i) => event(topic, `e${i}`)))
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ received: 1000, processed: 1000, duplicates: 0, rejected: 0 })
      expect((yield* get(`/events?topic=${topic}&limit=1000`)).json).toHaveLength(1000)
    }))

  it.effect.prop(
    "any well-formed Unicode topic and event_id: stored once and read back by key",
    [
      // short enough that the key stays well inside the router's parameter length (see the 200-character case)
      fc.fullUnicodeString({ minLength: 1, maxLength: 24 }).filter((s) => !/[\u0000-\u001f\u007f-\u009f]/.test(s)),
      // "." and ".." are valid ids but no WHATWG URL can carry them as a path segment
      fc.fullUnicodeString({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\u0000") && s !== "." && s !== "..")
    ],
    ([suffix, eventId]) =>
      Effect.gen(function*() {
        const topic = `${uniqueTopic("prop")}/${suffix}`
        const first = yield* post("/publish", event(topic, eventId, { payload: { suffix, eventId } }))
        expect(first.status).toBe(201)
        expect(first.json).toEqual({ status: "processed", id: eventId, topic })
        const again = yield* post("/publish", event(topic, eventId))
        expect(again.status).toBe(200)
        const stored = yield* get(eventPath(topic, eventId))
        expect(stored.status).toBe(200)
        expect(stored.json).toMatchObject({ topic, event_id: eventId, payload: { suffix, eventId } })
      }),
    { fastCheck: { numRuns: 30 } }
  )

  it.effect.prop(
    "any valid event (Unicode keys up to 255 code points, any offset and year, optional source and JSON payload): 201, then read back by key with every field",
    [validEvent],
    ([generated]) =>
      Effect.gen(function*() {
        const topic = topicOf(uniqueTopic("roundtrip"), generated)
        const res = yield* post("/publish", bodyOf(topic, generated))
        expect(res.status).toBe(201)
        expect(res.json).toEqual({ status: "processed", id: generated.event_id, topic })
        // raw, so an event_id of "." or ".." reaches the server as written
        const stored = yield* raw("GET", rawEventPath(topic, generated.event_id))
        expect(stored.status).toBe(200)
        expect(stored.json).toEqual({
          ...storedOf(topic, generated),
          seq: expect.any(Number),
          received_at: expect.stringMatching(isoMicros)
        })
      }),
    { timeout: 120_000, fastCheck: { numRuns: 100 } }
  )
})
