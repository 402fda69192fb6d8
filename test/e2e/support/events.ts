import { FastCheck as fc } from "effect"

// Generators for whole events, written from the API contract (README "Events"), not from the server's code:
// the properties in ingest.test.ts and validation.test.ts use them to say what every valid event and every
// broken one gets.

const controlCharacters = /[\u0000-\u001f\u007f-\u009f]/g
const withoutNul = (s: string) => s.replaceAll("\u0000", "")
const codePoints = (s: string) => [...s].length

/** Any code points but surrogate halves; `max` counts code points, as the limits do. */
const unicode = (minLength: number, maxLength: number) => fc.fullUnicodeString({ minLength, maxLength })

/** Mostly short strings, often long ones up to `max`: both ends of a length limit get exercised. */
const upTo = (max: number) => fc.oneof(unicode(1, 16), unicode(Math.max(1, max - 40), max))

const pad = (n: number, width: number) => String(n).padStart(width, "0")

const daysIn = (year: number, month: number) => {
  const d = new Date(0)
  d.setUTCFullYear(year, month, 0)
  return d.getUTCDate()
}

export interface GeneratedTimestamp {
  /** What the client sends. */
  readonly text: string
  /** The same instant as the API returns it: UTC, microseconds, `Z`. */
  readonly utc: string
}

interface Zone {
  readonly text: string
  readonly minutes: number
}

const zone: fc.Arbitrary<Zone> = fc.oneof(
  fc.constant({ text: "", minutes: 0 }),
  fc.constantFrom({ text: "Z", minutes: 0 }, { text: "z", minutes: 0 }),
  fc.record({
    sign: fc.constantFrom("+", "-"),
    hours: fc.integer({ min: 0, max: 15 }),
    minutes: fc.integer({ min: 0, max: 59 }),
    form: fc.constantFrom("hh:mm", "hhmm", "hh")
  }).map(({ form, hours, minutes, sign }) => {
    const m = form === "hh" ? 0 : minutes
    const text = form === "hh" ? `${sign}${pad(hours, 2)}` : `${sign}${pad(hours, 2)}${form === "hh:mm" ? ":" : ""}${pad(m, 2)}`
    return { text, minutes: (sign === "-" ? -1 : 1) * (hours * 60 + m) }
  })
)

const FIRST = Date.parse("0001-01-01T00:00:00Z")
const LAST = Date.parse("9999-12-31T23:59:59Z")

/** Any ISO-8601 date-time the contract accepts whose instant lies in years 0001–9999. */
export const validTimestamp: fc.Arbitrary<GeneratedTimestamp> = fc.record({
  year: fc.integer({ min: 1, max: 9999 }),
  month: fc.integer({ min: 1, max: 12 }),
  day: fc.integer({ min: 1, max: 31 }),
  hour: fc.integer({ min: 0, max: 23 }),
  minute: fc.integer({ min: 0, max: 59 }),
  second: fc.option(fc.integer({ min: 0, max: 59 }), { nil: undefined }),
  fraction: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 1, maxLength: 6 }).map((d) => d.join("")),
  withFraction: fc.boolean(),
  separator: fc.constantFrom("T", "t", " "),
  zone
}).map((p) => {
  const day = Math.min(p.day, daysIn(p.year, p.month))
  const fraction = p.second !== undefined && p.withFraction ? p.fraction : ""
  const time = `${pad(p.hour, 2)}:${pad(p.minute, 2)}${p.second === undefined ? "" : `:${pad(p.second, 2)}`}${fraction === "" ? "" : `.${fraction}`}`
  const text = `${pad(p.year, 4)}-${pad(p.month, 2)}-${pad(day, 2)}${p.separator}${time}${p.zone.text}`
  const at = new Date(0)
  at.setUTCFullYear(p.year, p.month - 1, day)
  at.setUTCHours(p.hour, p.minute - p.zone.minutes, p.second ?? 0, 0)
  const utc = `${pad(at.getUTCFullYear(), 4)}-${pad(at.getUTCMonth() + 1, 2)}-${pad(at.getUTCDate(), 2)}T` +
    `${pad(at.getUTCHours(), 2)}:${pad(at.getUTCMinutes(), 2)}:${pad(at.getUTCSeconds(), 2)}.${fraction.padEnd(6, "0")}Z`
  return { text, utc, instant: at.getTime() }
}).filter(({ instant }) => instant >= FIRST && instant <= LAST).map(({ text, utc }) => ({ text, utc }))

const MAX_PAYLOAD_BYTES = 64 * 1024

/** Any JSON value with Unicode strings, nested a few levels, under the default size limit and NUL-free. */
export const validPayload = fc.jsonValue({ maxDepth: 4, stringUnit: "grapheme" }).filter((v) => {
  const text = JSON.stringify(v)
  return !text.includes("\\u0000") && Buffer.byteLength(text) <= MAX_PAYLOAD_BYTES
})

export interface GeneratedEvent {
  /** Appended to a per-case unique prefix, so a re-run against the same server meets no old keys. */
  readonly topicSuffix: string
  readonly event_id: string
  readonly timestamp: GeneratedTimestamp
  readonly source: string | undefined
  readonly payload: unknown
  readonly hasPayload: boolean
}

export const validEvent: fc.Arbitrary<GeneratedEvent> = fc.record({
  topicSuffix: upTo(255).map((s) => s.replace(controlCharacters, "")).filter((s) => s !== ""),
  event_id: upTo(255).map(withoutNul).filter((s) => s !== ""),
  timestamp: validTimestamp,
  // an empty source is allowed: only its length is limited
  source: fc.option(fc.oneof(unicode(0, 16), unicode(215, 255)).map(withoutNul), { nil: undefined }),
  payload: validPayload,
  hasPayload: fc.boolean()
})

/** The topic a generated event is sent under: `prefix/suffix`, cut to the 255-code-point limit. */
export const topicOf = (prefix: string, e: GeneratedEvent) => [...`${prefix}/${e.topicSuffix}`].slice(0, 255).join("")

/** The request body of a generated event, optional fields left out when absent. */
export const bodyOf = (topic: string, e: GeneratedEvent): Record<string, unknown> => ({
  topic,
  event_id: e.event_id,
  timestamp: e.timestamp.text,
  ...(e.source === undefined ? {} : { source: e.source }),
  ...(e.hasPayload ? { payload: e.payload } : {})
})

/** What `GET /events/{topic}/{event_id}` must return for it (besides `seq` and `received_at`). */
export const storedOf = (topic: string, e: GeneratedEvent) => ({
  topic,
  event_id: e.event_id,
  timestamp: e.timestamp.utc,
  source: e.source ?? null,
  // the payload as JSON carries it (-0 is 0)
  payload: e.hasPayload ? JSON.parse(JSON.stringify(e.payload)) : null
})

// ---- broken events ----

const MISSING = Symbol("missing")

export interface Break {
  readonly field: "topic" | "event_id" | "timestamp" | "source" | "payload"
  readonly value: unknown
  readonly label: string
}

const preview = (value: unknown) => {
  if (value === MISSING) return "(left out)"
  const text = JSON.stringify(value) ?? String(value)
  return text.length > 60 ? `${text.slice(0, 60)}… (${text.length} characters)` : text
}

const wrongType = fc.oneof(
  fc.integer().map((v) => ["a number", v] as const),
  fc.boolean().map((v) => ["a boolean", v] as const),
  fc.constant(["null", null] as const),
  fc.array(fc.string(), { maxLength: 2 }).map((v) => ["an array", v] as const),
  fc.dictionary(fc.string(), fc.string(), { maxKeys: 2 }).map((v) => ["an object", v] as const)
)

const around = (bad: fc.Arbitrary<string>) =>
  fc.tuple(unicode(0, 8), bad, unicode(0, 8)).map(([a, c, b]) => `${a}${c}${b}`)

const tooLong = (max: number) => unicode(max + 1, max + 40).filter((s) => codePoints(s) > max)

const loneSurrogate = fc.constantFrom("\ud800", "\udbff", "\udc00", "\udfff")

const breaks = (field: Break["field"], cases: ReadonlyArray<fc.Arbitrary<readonly [string, unknown]>>) =>
  fc.oneof(...cases).map(([label, value]): Break =>
    // a failing case is reported by its labels and a preview, not by a 64 KiB string
    Object.assign({ field, value, label: `${field}: ${label}` }, {
      [fc.toStringMethod]: () => `${field}: ${label} ${preview(value)}`
    })
  )

const labelled = (label: string, arb: fc.Arbitrary<unknown>) => arb.map((v) => [label, v] as const)

const text = (max: number, extra: ReadonlyArray<fc.Arbitrary<readonly [string, unknown]>> = []) => [
  wrongType,
  labelled("too long", tooLong(max)),
  labelled("NUL inside", around(fc.constant("\u0000"))),
  labelled("an unpaired surrogate", around(loneSurrogate)),
  ...extra
]

/** A timestamp with one part out of range, or no date-time at all. */
const badTimestamp = fc.oneof(
  // one part of a valid timestamp replaced by an out-of-range value; each pattern captures what precedes it
  fc.tuple(validTimestamp, fc.constantFrom<[RegExp, fc.Arbitrary<string>]>(
    [/^()\d{4}/, fc.constant("0000")],
    [/^(\d{4}-)\d{2}/, fc.integer({ min: 13, max: 99 }).map(String)],
    [/^(\d{4}-\d{2}-)\d{2}/, fc.integer({ min: 32, max: 99 }).map(String)],
    [/^(\d{4}-\d{2}-\d{2}[Tt ])\d{2}/, fc.integer({ min: 24, max: 99 }).map(String)],
    [/^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:)\d{2}/, fc.integer({ min: 60, max: 99 }).map(String)]
  )).chain(([ts, [at, part]]) => part.map((p) => ts.text.replace(at, (_m, before: string) => `${before}${p}`))),
  fc.tuple(validTimestamp, fc.integer({ min: 16, max: 99 }), fc.constantFrom("+", "-"))
    .map(([ts, h, sign]) => ts.text.replace(/([Zz]|[+-]\d{2}(:?\d{2})?)?$/, `${sign}${h}:00`)),
  fc.constantFrom(
    "2025-02-29T00:00:00Z",
    "1900-02-29T00:00:00Z",
    "2025-01-01T00:00:60Z",
    "0001-01-01T00:00:00+00:01",
    "9999-12-31T23:59:59-00:01",
    "9999-12-31T23:59:59.9999999Z",
    "10000-01-01T00:00:00Z",
    "+002025-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "2025-01-01",
    "2025-01-01T00:00:00.1234567890Z",
    "1735689600",
    "yesterday",
    ""
  ),
  fc.string({ maxLength: 30 }).filter((s) => !/^\d{4}-/.test(s)),
  around(fc.constant("\u0000"))
)

const nested = (depth: number): unknown => {
  let v: unknown = 1
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

/** One field broken in one of the ways the contract refuses. */
export const breakArb: fc.Arbitrary<Break> = fc.oneof(
  breaks("topic", [
    labelled("missing", fc.constant(MISSING)),
    labelled("empty", fc.constant("")),
    labelled("a control character", around(fc.integer({ min: 1, max: 0x9f }).filter((c) => c < 0x20 || c >= 0x7f).map((c) => String.fromCharCode(c)))),
    ...text(255)
  ]),
  breaks("event_id", [labelled("missing", fc.constant(MISSING)), labelled("empty", fc.constant("")), ...text(255)]),
  breaks("timestamp", [labelled("missing", fc.constant(MISSING)), wrongType, labelled("unparseable or out of range", badTimestamp)]),
  breaks("source", text(255)),
  breaks("payload", [
    labelled("NUL in a string", validPayload.map((v) => ({ v, s: "a\u0000b" }))),
    labelled("NUL in a key", validPayload.map((v) => ({ v, ["k\u0000"]: 1 }))),
    labelled("an unpaired surrogate", loneSurrogate.map((s) => [s])),
    labelled("nested 65 levels", fc.integer({ min: 65, max: 80 }).map(nested)),
    labelled("over 64 KiB as JSON", fc.integer({ min: 64 * 1024 - 1, max: 80 * 1024 }).map((n) => "x".repeat(n)))
  ])
)

/** One to five different fields broken at once. */
export const breaksArb = fc.uniqueArray(breakArb, { minLength: 1, maxLength: 5, selector: (b) => b.field })

/** The body with each break applied. */
export const broken = (body: Record<string, unknown>, applied: ReadonlyArray<Break>): Record<string, unknown> => {
  const out = { ...body }
  for (const b of applied) {
    if (b.value === MISSING) delete out[b.field]
    else out[b.field] = b.value
  }
  return out
}
