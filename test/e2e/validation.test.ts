import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { event, get, post, TIMESTAMP, uniqueTopic } from "./support/http.js"
import { E2eLive } from "./support/target.js"

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
})
