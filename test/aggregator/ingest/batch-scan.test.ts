import { describe, expect, it } from "@effect/vitest"
import { Either, FastCheck as fc } from "effect"
import { scanBatch } from "../../../src/aggregator/ingest/BatchScan.js"
import { parseJsonText } from "../../../src/aggregator/ingest/Body.js"
import { batchItems, GUARDED_DEPTH, validateItem } from "../../../src/aggregator/ingest/Validation.js"
import { ValidationFailed } from "../../../src/domain/Errors.js"
import { bodyOf, breaksArb, broken, topicOf, validEvent } from "../../e2e/support/events.js"

// The batch scanner answers the common case without JSON.parse; whatever it answers must be what the usual
// path (parse with the repeated-key scan, then the validator) makes of the same text.
const limit = 64 * 1024

/** Checks scanBatch against the usual path on one body text; says which way the scanner went. */
const agrees = (text: string, maxPayloadBytes = limit): "scanned" | "usual" => {
  const fast = scanBatch(text, maxPayloadBytes)
  if (fast === undefined) return "usual"
  const parsed = parseJsonText(text)
  if (parsed instanceof ValidationFailed) return expect.fail(`scanned a body the usual path refuses: ${parsed.message}`)
  const envelope = batchItems(parsed.value, parsed.depth > GUARDED_DEPTH)
  if (Either.isLeft(envelope)) return expect.fail("scanned a body that is not a batch")
  const items = envelope.right
  expect(fast.length).toBe(items.length)
  fast.forEach((item, i) => {
    const usual = validateItem(items[i], maxPayloadBytes, parsed.depth > GUARDED_DEPTH)
    if (typeof item === "string") {
      // handed back: the item's own text, the same value
      expect(JSON.stringify(JSON.parse(item))).toBe(JSON.stringify(items[i]))
      return
    }
    if (Either.isLeft(usual)) return expect.fail(`scanned an item the validator refuses: ${JSON.stringify(usual.left)}`)
    const { payloadValue: _, ...row } = usual.right
    // the payload as sent: the same JSON value as the validator's text of it
    expect({ ...item, payload: item.payload === null ? null : JSON.stringify(JSON.parse(item.payload)) }).toEqual(row)
  })
  return "scanned"
}

// JSON text with whitespace between tokens (outside strings)
const spaced = (text: string, seed: number): string => {
  let out = ""
  let inString = false
  let r = seed
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    out += c
    if (inString) {
      if (c === "\\") out += text[++i]
      else if (c === "\"") inString = false
      continue
    }
    if (c === "\"") inString = true
    else if ("{}[],:".includes(c)) {
      r = (r * 1103515245 + 12345) % 2147483648
      out += ["", " ", "\n", "\t ", "\r\n"][r % 5]
    }
  }
  return out
}

const item = fc.oneof(
  { weight: 6, arbitrary: validEvent.map((e) => bodyOf(topicOf("p", e), e)) },
  { weight: 2, arbitrary: fc.tuple(validEvent, breaksArb).map(([e, b]) => broken(bodyOf(topicOf("p", e), e), b)) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) },
  {
    weight: 1,
    arbitrary: fc.record({
      topic: fc.oneof(fc.constant("t"), fc.string({ maxLength: 4 })),
      event_id: fc.oneof(fc.constantFrom("a", "b"), fc.string({ maxLength: 3 })),
      timestamp: fc.constantFrom("2025-01-01T00:00:00Z", "2025-01-01T00:00:00.123+01:00", "2025-01-01", "x"),
      payload: fc.jsonValue({ maxDepth: 3 }),
      extra: fc.jsonValue({ maxDepth: 1 })
    }, { requiredKeys: ["topic", "event_id", "timestamp"] })
  }
)
const body = fc.tuple(fc.array(item, { maxLength: 8 }), fc.boolean()).map(([items, bare]) => JSON.stringify(bare ? items : { events: items }))

describe("scanBatch agrees with the usual path", () => {
  it.prop("on generated batches, compact and spaced", [body, fc.nat()], ([text, seed]) => {
    agrees(text)
    agrees(spaced(text, seed))
  }, { fastCheck: { numRuns: 2000, endOnFailure: true } })

  it.prop("on batches with one character inserted, deleted or replaced (mostly not JSON any more)", [
    body,
    fc.nat(),
    fc.constantFrom("", "\"", "\\", "{", "}", "[", "]", ",", ":", "0", "-", "e", ".", "u", "\u0000", " ", "a"),
    fc.constantFrom(0, 1)
  ], ([text, at, ch, drop]) => {
    const i = at % (text.length + 1)
    agrees(text.slice(0, i) + ch + text.slice(i + drop))
  }, { fastCheck: { numRuns: 2000, endOnFailure: true } })

  it.prop("with a small payload limit (payloads near and over it)", [body], ([text]) => {
    agrees(text, 40)
  }, { fastCheck: { numRuns: 2000, endOnFailure: true } })

  it("scans the common case and hands back only what it must", () => {
    const e = (n: number, extra = "") => `{"topic":"t","event_id":"e${n}","timestamp":"2025-01-01T00:00:00Z","payload":{"n":${n}}${extra}}`
    expect(agrees(`{"events":[${e(1)},${e(2)}]}`)).toBe("scanned")
    expect(agrees(`[${e(1)}, ${e(1)}]`)).toBe("scanned")
    const handedBack = [
      `{"topic":"t","event_id":"e\\u0031","timestamp":"2025-01-01T00:00:00Z"}`,
      e(3, `,"source":5`),
      `{"topic":"t","event_id":"e4","timestamp":"2025-01-01T00:00:00Z","payload":1e3}`,
      // a double only as Infinity, which the validator refuses
      `{"topic":"t","event_id":"e4b","timestamp":"2025-01-01T00:00:00Z","payload":[1${"0".repeat(400)}]}`,
      `{"topic":"t","event_id":"e5","timestamp":"2025-01-01T00:00:00Z","payload":"\\u0000"}`,
      `{"topic":"t","event_id":"e6","timestamp":"2025-01-01T00:00:00Z","payload":"\\ud800"}`,
      `{"topic":"t","event_id":"e7","timestamp":"2025-02-30T00:00:00Z"}`,
      `{"topic":"","event_id":"e8","timestamp":"2025-01-01T00:00:00Z"}`,
      `{}`,
      `7`
    ]
    const scanned = scanBatch(`[${e(1)},${handedBack.join(",")}]`, limit)
    expect(scanned?.map((x) => typeof x)).toEqual(["object", ...handedBack.map(() => "string")])
    expect(agrees(`[${e(1)},${handedBack.join(",")}]`)).toBe("scanned")
    // the whole body goes the usual way
    for (
      const text of [
        `[{"topic":"t","topic":"u","event_id":"e","timestamp":"2025-01-01T00:00:00Z"}]`,
        `{"events":[],"events":[]}`,
        `[{"a":{"x":1,"\\u0078":2}}]`,
        `{"events":{}}`,
        `{"other":[]}`,
        `[${"[".repeat(70)}${"]".repeat(70)}]`,
        `[1,]`,
        `[01]`,
        `[] x`,
        ``
      ]
    ) expect(scanBatch(text, limit)).toBeUndefined()
  })
})
