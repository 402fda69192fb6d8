import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { parseTimestamp, parseTimestampByPattern, timestampUtcIso } from "../../../src/domain/Event.js"

// parseTimestamp answers a timestamp already in its stored form without the pattern; on every text it must
// answer what the pattern answers.
const d2 = fc.integer({ min: 0, max: 99 }).map((n) => String(n).padStart(2, "0"))
const year = fc.oneof(fc.integer({ min: 0, max: 10 }), fc.integer({ min: 1000, max: 2100 }), fc.integer({ min: 9990, max: 9999 }))
  .map((n) => String(n).padStart(4, "0"))
const month = fc.oneof(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 19 })).map((n) => String(n).padStart(2, "0"))
const day = fc.oneof(fc.integer({ min: 1, max: 31 }), fc.constantFrom(0, 28, 29, 30, 31, 32)).map((n) => String(n).padStart(2, "0"))
const hour = fc.oneof(fc.integer({ min: 0, max: 23 }), fc.integer({ min: 20, max: 29 })).map((n) => String(n).padStart(2, "0"))
const minsec = fc.oneof(fc.integer({ min: 0, max: 59 }), fc.integer({ min: 55, max: 99 })).map((n) => String(n).padStart(2, "0"))
const fraction = fc.oneof(fc.constant(""), fc.stringMatching(/^\.\d{1,12}$/), fc.constant("."), fc.constant(".9999999999"))
const offset = fc.oneof(
  fc.constantFrom("Z", "z", "", "+00:00", "-00:00"),
  fc.tuple(fc.constantFrom("+", "-"), d2, d2, fc.constantFrom(":", "")).map(([s, h, m, colon]) => `${s}${h}${colon}${m}`),
  fc.tuple(fc.constantFrom("+", "-"), d2).map(([s, h]) => `${s}${h}`)
)
const separator = fc.constantFrom("T", "T", "T", "t", " ")
const timestamp = fc.tuple(year, month, day, separator, hour, minsec, fc.option(minsec, { nil: undefined }), fraction, offset).map(
  ([y, mo, d, t, h, mi, s, f, z]) => `${y}-${mo}-${d}${t}${h}:${mi}${s === undefined ? "" : `:${s}${f}`}${z}`
)
// one character of a valid timestamp changed, dropped or added
const mangled = fc.tuple(timestamp, fc.nat(40), fc.constantFrom("", "0", "9", "-", ":", "T", "Z", "+", ".", "a", " ", "\u0660"), fc.constantFrom(0, 1))
  .map(([t, at, ch, drop]) => t.slice(0, at % (t.length + 1)) + ch + t.slice((at % (t.length + 1)) + drop))

describe("parseTimestamp", () => {
  it.prop("answers what the pattern answers on generated timestamps, broken ones included", [fc.oneof(timestamp, mangled)], ([t]) => {
    expect(parseTimestamp(t)).toEqual(parseTimestampByPattern(t))
    const byPattern = parseTimestampByPattern(t)
    expect(timestampUtcIso(t)).toBe("error" in byPattern ? undefined : byPattern.utcIso)
  }, { fastCheck: { numRuns: 5000 } })

  it.prop("answers what the pattern answers on any instant's ISO text", [fc.date({ noInvalidDate: true })], ([d]) => {
    const t = d.toISOString()
    expect(parseTimestamp(t)).toEqual(parseTimestampByPattern(t))
  })

  it("takes the edges of the range and the calendar as the pattern does", () => {
    for (
      const t of [
        "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "0002-01-01T00:00:00+15:59", "9998-12-31T23:59:59.999999999-15:59",
        "9999-12-31T23:59:59.9999995Z", "9999-12-31T23:59:59Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z",
        "2000-02-29T12:00:00.5+05:30", "2025-04-31T00:00:00Z", "2025-01-31T24:00:00Z", "2025-01-31T12:00:00+16:00"
      ]
    ) expect(parseTimestamp(t)).toEqual(parseTimestampByPattern(t))
  })
})
