import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { bodyOf, breaksArb, broken, topicOf, validEvent } from "./support/events.js"
import { event, get, post, TIMESTAMP, uniqueTopic } from "./support/http.js"
import { E2e, E2eLive } from "./support/target.js"

const paths = (json: any): Array<string> => json.issues.map((i: { path: string }) => i.path).sort()

/** A 422 `validation_failed` naming exactly the failing `fields`, each with a message. */
const expectInvalid = (res: { status: number; json: any }, fields: ReadonlyArray<string>) => {
  expect(res.status).toBe(422)
  expect(res.json).toMatchObject({ error: "validation_failed" })
  expect(typeof res.json.message).toBe("string")
  expect(paths(res.json)).toEqual([...fields].sort())
  for (const issue of res.json.issues) expect(issue.message).toEqual(expect.any(String))
}

const nested = (depth: number): unknown => {
  let v: unknown = 1
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

const overLimit = "x".repeat(70 * 1024)

/** The event as JSON text with `"__N__"` replaced by `number` as written: JSON.stringify cannot write 1e400. */
const withNumber = (body: Record<string, unknown>, number: string) => JSON.stringify(body).replace("\"__N__\"", number)

const totalRows = Effect.map(get("/stats"), (res) => res.json.database_total_rows as number)

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: validation", (it) => {
  it.effect.each(["topic", "event_id", "timestamp"])("a missing %s is a 422 naming only that field", (field) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("missing")
      const body: Record<string, unknown> = event(topic, "e", { source: "s", payload: { a: 1 } })
      delete body[field]
      expectInvalid(yield* post("/publish", body), [field])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("an empty object is a 422 listing all three required fields", () =>
    Effect.gen(function*() {
      expectInvalid(yield* post("/publish", {}), ["event_id", "timestamp", "topic"])
    }))

  it.effect.each([
    ["topic", 42],
    ["topic", null],
    ["topic", { name: "t" }],
    ["event_id", true],
    ["event_id", ["a"]],
    ["event_id", 7],
    ["timestamp", 1735689600],
    ["source", 7],
    ["source", null]
  ] as const)("%s of the wrong type (%j) is a 422 naming it", ([field, value]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("type")
      expectInvalid(yield* post("/publish", event(topic, "e", { [field]: value })), [field])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("several wrong fields at once are all reported", () =>
    Effect.gen(function*() {
      expectInvalid(yield* post("/publish", { topic: 5, event_id: [], timestamp: "soon", source: false }), [
        "event_id",
        "source",
        "timestamp",
        "topic"
      ])
    }))

  it.effect.each([
    ["topic", "empty topic", ""],
    ["topic", "256-character topic", "t".repeat(256)],
    ["topic", "topic with a newline", "line\nbreak"],
    ["topic", "topic with a tab", "tab\there"],
    ["event_id", "empty event_id", ""],
    ["event_id", "256-character event_id", "e".repeat(256)],
    ["event_id", "event_id with NUL", "nul\u0000byte"],
    ["event_id", "event_id with an unpaired surrogate", "lone \ud800 surrogate"],
    ["timestamp", "a word as timestamp", "yesterday"],
    ["timestamp", "February 30th", "2025-02-30T00:00:00Z"],
    ["timestamp", "hour 24", "2025-01-01T24:00:00Z"],
    ["timestamp", "month 13", "2025-13-01T00:00:00Z"],
    ["timestamp", "empty timestamp", ""],
    ["source", "256-character source", "s".repeat(256)],
    ["payload", "payload string with NUL", { text: "a\u0000b" }],
    ["payload", "payload key with NUL", { ["k\u0000"]: 1 }],
    ["payload", "payload over 64 KiB", "x".repeat(70 * 1024)],
    ["payload", "payload nested 65 levels", nested(65)]
  ] as const)("%s: %s is a 422", ([field, , value]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("value")
      const body = field === "topic" ? event(value as string, "e") : event(topic, "e", { [field]: value })
      expectInvalid(yield* post("/publish", body), [field])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect.each([
    ["not json", "plain text"],
    ["{\"topic\":", "truncated JSON"],
    ["{'topic': 'single quotes'}", "single-quoted JSON"],
    ["", "empty body"]
  ])("a body that is not a JSON event (%j: %s) is a 422 at the root", ([raw]) =>
    Effect.gen(function*() {
      expectInvalid(yield* post("/publish", raw), [""])
    }))

  it.effect.each([
    ["null"],
    ["[]"],
    ["\"just a string\""],
    ["42"],
    ["true"]
  ])("JSON that is not an object (%s) is a 422 at the root", ([raw]) =>
    Effect.gen(function*() {
      expectInvalid(yield* post("/publish", raw), [""])
    }))

  it.effect("a body that is not UTF-8 is a 422", () =>
    Effect.gen(function*() {
      const bytes = new Uint8Array([...new TextEncoder().encode("{\"topic\":\""), 0xff, 0xfe, ...new TextEncoder().encode("\"}")])
      expectInvalid(yield* post("/publish", bytes), [""])
    }))

  it.effect("a body over the byte limit is a 413 with the limit, and nothing is stored", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("big")
      const body = JSON.stringify(event(topic, "e", { pad: "x".repeat(1024 * 1024) }))
      const res = yield* post("/publish", body)
      expect(res.status).toBe(413)
      expect(res.json).toMatchObject({ error: "payload_too_large" })
      expect(res.json.limit).toBeGreaterThan(0)
      expect(res.json.limit).toBeLessThan(body.length)
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("a batch over the event-count limit is a 413 and stores none of it", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("many")
      const events = Array.from({ length: 1001 }, (_, i) => event(topic, String(i)))
      const res = yield* post("/publish/batch", { events })
      expect(res.status).toBe(413)
      expect(res.json).toMatchObject({ error: "payload_too_large", limit: 1000 })
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect.each([
    ["{\"events\":\"x\"}"],
    ["{\"items\":[]}"],
    ["null"],
    ["\"batch\""],
    ["not json"],
    [""]
  ])("a batch body that is neither an array nor {events: [...]} (%s) is a 422", ([raw]) =>
    Effect.gen(function*() {
      const res = yield* post("/publish/batch", raw)
      expect(res.status).toBe(422)
      expect(res.json).toMatchObject({ error: "validation_failed" })
      expect(res.json.issues.length).toBeGreaterThan(0)
    }))

  it.effect.each([
    ["limit=0", "limit"],
    ["limit=1001", "limit"],
    ["limit=ten", "limit"],
    ["limit=2.5", "limit"],
    ["before=0", "before"],
    ["before=abc", "before"],
    ["topic=", "topic"]
  ])("GET /events?%s is a 422 naming %s", ([query, field]) =>
    Effect.gen(function*() {
      expectInvalid(yield* get(`/events?${query}`), [field])
    }))

  it.effect("a payload over the size limit is listed together with every other failing field", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("size-and")
      expectInvalid(yield* post("/publish", { topic: 5, event_id: "e", timestamp: TIMESTAMP, payload: overLimit }), ["payload", "topic"])
      expectInvalid(
        yield* post("/publish", { topic, event_id: "", timestamp: "2025-13-01T00:00:00Z", source: 7, payload: overLimit }),
        ["event_id", "payload", "source", "timestamp"]
      )
      expectInvalid(yield* post("/publish", { topic, event_id: "e", payload: { big: overLimit } }), ["payload", "timestamp"])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("in a batch too, an item's payload over the limit is listed with its other failing fields", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("size-and-batch")
      const res = yield* post("/publish/batch", [
        { topic, event_id: "bad", timestamp: "soon", payload: overLimit },
        { topic, event_id: "bad-too", timestamp: TIMESTAMP, payload: overLimit, source: ["x"] },
        event(topic, "good")
      ])
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ received: 3, processed: 1, rejected: 2 })
      expect(res.json.results[0].errors.map((e: any) => e.path).sort()).toEqual(["payload", "timestamp"])
      expect(res.json.results[1].errors.map((e: any) => e.path).sort()).toEqual(["payload", "source"])
      expect((yield* get(`/events?topic=${topic}`)).json.map((e: any) => e.event_id)).toEqual(["good"])
    }))

  it.effect.each([
    ["year 0000", "0000-01-01T00:00:00Z"],
    ["year 0000 with an offset that would bring it into year 1", "0000-12-31T23:00:00-02:00"],
    ["offset +16:00", "2025-01-01T00:00:00+16:00"],
    ["offset -16:00", "2025-01-01T00:00:00-16:00"],
    ["offset minutes 60", "2025-01-01T00:00:00+01:60"],
    ["offset +99", "2025-01-01T00:00:00+99"],
    ["an instant before year 1 (0001-01-01 at +00:01)", "0001-01-01T00:00:00+00:01"],
    ["an instant after year 9999 (at -00:01)", "9999-12-31T23:59:00-00:01"],
    ["a fraction that rounds into year 10000", "9999-12-31T23:59:59.9999999Z"],
    ["a five-digit year", "10000-01-01T00:00:00Z"],
    ["an expanded year", "+002025-01-01T00:00:00Z"],
    ["a negative year", "-0001-01-01T00:00:00Z"],
    ["second 60 (a leap second)", "2016-12-31T23:59:60Z"],
    ["February 29th of 1900", "1900-02-29T00:00:00Z"],
    ["ten fraction digits", "2025-01-01T00:00:00.1234567890Z"],
    ["a date without a time", "2025-01-01"],
    ["Unix seconds as a string", "1735689600"],
    ["a NUL inside", "2025-01-01T00:00:00\u0000Z"]
  ])("timestamp: %s (%s) is a 422 naming timestamp, and nothing is stored", ([, timestamp]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("ts-range")
      expectInvalid(yield* post("/publish", event(topic, "e", { timestamp })), ["timestamp"])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect.each([
    ["1e400", "payload", (n: string) => ({ payload: n })],
    ["-1e400", "payload", (n: string) => ({ payload: n })],
    [`1${"0".repeat(400)}`, "payload", (n: string) => ({ payload: { amounts: [1, n] } })],
    ["1e400", "topic", () => ({ topic: "__N__" })],
    ["1e400", "timestamp", () => ({ timestamp: "__N__" })]
  ] as const)("a number past the double range (%s) in %s is a 422 naming that field", ([number, field, at]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("huge-number")
      const res = yield* post("/publish", withNumber(event(topic, "n", at("__N__")), number))
      expectInvalid(res, [field])
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("in a batch, an item with 1e400 in its payload is rejected and the others are stored", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("huge-number-batch")
      const text = `[${withNumber(event(topic, "bad", { payload: "__N__" }), "1e400")},${JSON.stringify(event(topic, "good"))}]`
      const res = yield* post("/publish/batch", text)
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ received: 2, processed: 1, rejected: 1 })
      expect(res.json.results[0].errors.map((e: any) => e.path)).toEqual(["payload"])
      expect((yield* get(`/events?topic=${topic}`)).json.map((e: any) => e.event_id)).toEqual(["good"])
    }))

  it.effect.prop(
    "any valid event with one to five fields broken: a 422 naming exactly the broken fields, nothing stored; in a batch the item is rejected with the same fields and its sibling stored",
    [validEvent, breaksArb],
    ([generated, breaks]) =>
      Effect.gen(function*() {
        const { exclusive } = yield* E2e
        const topic = topicOf(uniqueTopic("broken"), generated)
        const body = broken(bodyOf(topic, generated), breaks)
        const fields = breaks.map((b) => b.field)
        const rowsBefore = exclusive ? yield* totalRows : undefined

        expectInvalid(yield* post("/publish", body), fields)
        if (exclusive) expect(yield* totalRows).toBe(rowsBefore)

        const sibling = event(uniqueTopic("broken-sibling"), "ok")
        const batch = yield* post("/publish/batch", { events: [body, sibling] })
        expect(batch.status).toBe(200)
        expect(batch.json).toMatchObject({ received: 2, processed: 1, duplicates: 0, rejected: 1 })
        expect(batch.json.results[0].status).toBe("rejected")
        expect(batch.json.results[0].errors.map((e: any) => e.path).sort()).toEqual([...fields].sort())
        expect(batch.json.results[1]).toMatchObject({ status: "processed", topic: sibling.topic, event_id: "ok" })
        if (exclusive) expect(yield* totalRows).toBe(rowsBefore! + 1)
        if (typeof body.topic === "string") expect((yield* get(`/events?topic=${encodeURIComponent(topic)}`)).json).toEqual([])
      }),
    { timeout: 120_000, fastCheck: { numRuns: 100 } }
  )

  it.effect("an invalid event stores nothing, even when its other fields are fine", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("nothing")
      const bad = [
        { topic, event_id: "no-timestamp" },
        { topic, event_id: "bad-timestamp", timestamp: "2025-02-29T00:00:00Z" },
        { topic, event_id: "bad-source", timestamp: TIMESTAMP, source: 1 },
        { topic, event_id: "bad-payload", timestamp: TIMESTAMP, payload: nested(100) }
      ]
      for (const body of bad) expect((yield* post("/publish", body)).status).toBe(422)
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  // Nested as text: JSON.stringify recurses and would overflow first.
  const deepText = (levels: number) => `${"[".repeat(levels)}1${"]".repeat(levels)}`

  it.effect.each([
    ["a body", () => deepText(3000)],
    ["the topic", () => `{"topic":${deepText(3000)},"event_id":"e","timestamp":"${TIMESTAMP}"}`],
    ["the source", () => `{"topic":"t","event_id":"e","timestamp":"${TIMESTAMP}","source":${deepText(20000)}}`],
    ["the payload", () => `{"topic":"t","event_id":"e","timestamp":"${TIMESTAMP}","payload":${deepText(20000)}}`]
  ] as const)("%s nested thousands of levels deep is a 422, never a 500", ([, body]) =>
    Effect.gen(function*() {
      const res = yield* post("/publish", body())
      expect(res.status).toBe(422)
      expect(res.json.error).toBe("validation_failed")
    }))

  it.effect("in a batch, an item nested thousands of levels deep is rejected and its sibling stored; a deep envelope is a 422", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("deep-batch")
      const res = yield* post("/publish/batch", `[${JSON.stringify(event(topic, "good"))},${deepText(3000)}]`)
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ received: 2, processed: 1, rejected: 1 })
      expect((yield* get(`/events?topic=${topic}`)).json.map((e: any) => e.event_id)).toEqual(["good"])
      const envelope = yield* post("/publish/batch", `{"events":{"x":${deepText(3000)}}}`)
      expect(envelope.status).toBe(422)
    }))
})
