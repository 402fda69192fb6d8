import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import { parseJson } from "../../../src/aggregator/ingest/Body.js"
import { acceptedEvent, batchItems, GUARDED_DEPTH, validateBySchema, validateItem } from "../../../src/aggregator/ingest/Validation.js"
import { ValidationFailed } from "../../../src/domain/Errors.js"
import { bodyOf, breaksArb, broken, topicOf, validEvent } from "../../e2e/support/events.js"

// The ingest path validates with a hand-written fast path that only accepts; everything it does not accept
// goes to the schema. These properties hold it to the schema's verdict and output.

const limit = 64 * 1024
const enc = new TextEncoder()
const deep = (n: number, inner: unknown = 1): unknown => {
  let v = inner
  for (let i = 0; i < n; i++) v = [v]
  return v
}

describe("the fast validator agrees with the schema", () => {
  it.prop("every generated valid event is accepted by the fast path, with the schema's output", [validEvent], ([e]) => {
    const body = JSON.parse(JSON.stringify(bodyOf(topicOf("p", e), e)))
    expect(acceptedEvent(body)).toBeDefined()
    expect(validateItem(body, limit, false)).toEqual(validateBySchema(body, limit))
  }, { fastCheck: { numRuns: 300 } })

  it.prop("for a broken event the answer is the schema's, whatever the fast path does", [validEvent, breaksArb], ([e, breaks]) => {
    const body = broken(bodyOf(topicOf("p", e), e), breaks)
    expect(validateItem(body, limit, false)).toEqual(validateBySchema(body, limit))
  }, { fastCheck: { numRuns: 300 } })

  it.prop("on any JSON value, whatever the fast path accepts the schema accepts the same way", [
    fc.oneof(
      fc.jsonValue({ maxDepth: 3 }),
      fc.record({
        topic: fc.oneof(fc.string(), fc.jsonValue({ maxDepth: 1 })),
        event_id: fc.oneof(fc.string({ maxLength: 300 }), fc.integer()),
        timestamp: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), fc.string()),
        source: fc.option(fc.oneof(fc.string({ maxLength: 300 }), fc.constant(null)), { nil: undefined }),
        payload: fc.option(fc.jsonValue({ maxDepth: 3 }), { nil: undefined })
      }, { requiredKeys: [] })
    )
  ], ([value]) => {
    const body = JSON.parse(JSON.stringify(value) ?? "null")
    const accepted = acceptedEvent(body)
    const schema = validateBySchema(body, limit)
    if (accepted !== undefined) expect(Either.isRight(schema)).toBe(true)
    expect(validateItem(body, limit, false)).toEqual(schema)
  }, { fastCheck: { numRuns: 1000 } })
})

describe("deep bodies", () => {
  it.effect("an event nested thousands of levels deep in any field is a 422 naming that field, not a stack overflow", () =>
    Effect.sync(() => {
      const valid = { topic: "t", event_id: "e", timestamp: "2025-01-01T00:00:00Z" }
      for (const field of ["topic", "event_id", "timestamp", "source"]) {
        // JSON.stringify recurses, so the deep text is written out by hand
        const text = JSON.stringify({ ...valid, [field]: 0 }).replace(`"${field}":0`, `"${field}":${"[".repeat(5000)}1${"]".repeat(5000)}`)
        const parsed = parseJson(enc.encode(text))
        if (parsed instanceof ValidationFailed) return expect.fail("valid JSON")
        expect(parsed.depth).toBeGreaterThan(GUARDED_DEPTH)
        const result = validateItem(parsed.value, limit, true)
        expect(Either.isLeft(result) && result.left.map((i) => i.path)).toEqual([field])
      }
      const payload = validateItem({ ...valid, payload: deep(5000) }, limit, true)
      expect(Either.isLeft(payload) && payload.left.map((i) => i.path)).toEqual(["payload"])
      const whole = validateItem(deep(5000), limit, true)
      expect(Either.isLeft(whole) && whole.left.map((i) => i.path)).toEqual([""])
      // deep only in a field the schema ignores: still a valid event
      expect(Either.isRight(validateItem({ ...valid, extra: deep(5000) }, limit, true))).toBe(true)
      // two deep fields and a shallow broken one are all named, in field order
      const many = validateItem({ topic: deep(3000), event_id: "", timestamp: deep(3000) }, limit, true)
      expect(Either.isLeft(many) && many.left.map((i) => i.path)).toEqual(["topic", "event_id", "timestamp"])
    }))

  it.effect("a deep batch envelope is a 422; deep items are rejected one by one", () =>
    Effect.sync(() => {
      const envelope = batchItems({ events: { nested: deep(5000) } }, true)
      expect(Either.isLeft(envelope) && envelope.left.map((i) => i.path)).toEqual([""])
      const items = batchItems([{ topic: "t", event_id: "e", timestamp: "2025-01-01T00:00:00Z" }, deep(5000)], true)
      expect(Either.isRight(items)).toBe(true)
      if (Either.isRight(items)) {
        expect(items.right.map((item) => Either.isRight(validateItem(item, limit, true)))).toEqual([true, false])
      }
    }))
})
