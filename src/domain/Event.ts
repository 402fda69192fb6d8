import * as Schema from "effect/Schema"
import { VERSION } from "./Version.js"

const codePoints = (s: string): number => {
  let n = 0
  for (const _ of s) n++
  return n
}

// PostgreSQL text and jsonb refuse NUL and unpaired surrogates; reject them here so they are a 422,
// never a database error.
const storable = (s: string): boolean => !s.includes("\u0000") && s.isWellFormed()

/** Why a text of 1–`max` code points is not acceptable, or undefined when it is. */
const textProblem = (name: string, max: number, extra?: (s: string) => boolean, extraMessage?: string) =>
(s: string): string | undefined => {
  // at most `max` UTF-16 units is at most `max` code points: count only longer ones
  const n = s.length <= max ? s.length : codePoints(s)
  if (n < 1) return `${name} must not be empty`
  if (n > max) return `${name} must be at most ${max} characters`
  if (!storable(s)) return `${name} must be valid Unicode text without NUL characters`
  if (extra !== undefined && !extra(s)) return extraMessage
  return undefined
}

// eslint-disable-next-line no-control-regex
const controlCharacters = /[\u0000-\u001f\u007f-\u009f]/

export const topicProblem = textProblem("topic", 255, (s) => !controlCharacters.test(s), "topic must not contain control characters")
export const eventIdProblem = textProblem("event_id", 255)
export const sourceProblem = (s: string): string | undefined => {
  if ((s.length <= 255 ? 0 : codePoints(s)) > 255) return "source must be at most 255 characters"
  if (!storable(s)) return "source must be valid Unicode text without NUL characters"
  return undefined
}

export const Topic = Schema.String.pipe(
  Schema.filter((s) => topicProblem(s) ?? true, { jsonSchema: { minLength: 1, maxLength: 255 } })
).annotations({ identifier: "Topic", description: "1–255 characters, no control characters", examples: ["orders"] })

export const EventId = Schema.String.pipe(
  Schema.filter((s) => eventIdProblem(s) ?? true, { jsonSchema: { minLength: 1, maxLength: 255 } })
).annotations({ identifier: "EventId", description: "1–255 characters; unique within its topic", examples: ["evt-0001"] })

export const Source = Schema.String.pipe(
  Schema.filter((s) => sourceProblem(s) ?? true)
).annotations({ identifier: "Source", description: "Optional producer name, at most 255 characters" })

const isoDateTime =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?$/

const FIRST_SECOND = Date.parse("0001-01-01T00:00:00Z")
const LAST_SECOND = Date.parse("9999-12-31T23:59:59Z")

/** `parseTimestamp` by the pattern alone, for every form it accepts (the fast path below covers the common one). */
export const parseTimestampByPattern = (s: string): { readonly utcIso: string } | { readonly error: string } => {
  const m = isoDateTime.exec(s)
  if (m === null) return { error: "timestamp must be an ISO-8601 date-time, e.g. 2025-01-31T12:00:00.123456Z" }
  const [, y, mo, d, h, mi, sec = "00", frac = "", z, sign, oh, om = "00"] = m
  const year = Number(y), month = Number(mo), day = Number(d)
  const hour = Number(h), minute = Number(mi), second = Number(sec)
  if (year < 1) return { error: "timestamp year must be 0001 or later" }
  if (month < 1 || month > 12) return { error: "timestamp month must be 01–12" }
  const daysInMonth = new Date(Date.UTC(year, month, 0)).getUTCDate()
  if (day < 1 || day > daysInMonth) return { error: "timestamp day is not in its month" }
  if (hour > 23 || minute > 59 || second > 59) return { error: "timestamp time of day is out of range" }
  if (sign !== undefined && (Number(oh) > 15 || Number(om) > 59)) return { error: "timestamp offset is out of range" }
  // The instant, not the written date, must be in 0001–9999: PostgreSQL would store `0001-01-01T00:00+01:00` as
  // a BC date and `9999-12-31T23:59:59.9999995Z` as year 10000, and neither reads back as the same instant.
  const offsetMinutes = sign === undefined ? 0 : (sign === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om))
  const at = new Date(0)
  at.setUTCFullYear(year, month - 1, day)
  at.setUTCHours(hour, minute - offsetMinutes, second, 0)
  // rounded to microseconds the way PostgreSQL rounds, which may carry into the next second
  const carry = frac.length > 6 && Math.round(Number(`0.${frac}`) * 1e6) >= 1e6 ? 1000 : 0
  const instant = at.getTime() + carry
  if (instant < FIRST_SECOND || instant > LAST_SECOND) {
    return { error: "timestamp must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z" }
  }
  const offset = z !== undefined ? "Z" : sign !== undefined ? `${sign}${oh}:${om}` : "Z"
  const fraction = frac === "" ? "" : `.${frac}`
  return { utcIso: `${y}-${mo}-${d}T${h}:${mi}:${sec}${fraction}${offset}` }
}

const digit = (s: string, i: number): number => {
  const c = s.charCodeAt(i) - 48
  return c >= 0 && c <= 9 ? c : NaN
}
const two = (s: string, i: number): number => digit(s, i) * 10 + digit(s, i + 1)
const daysIn = (year: number, month: number): number =>
  month === 2 ? (year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0) ? 29 : 28) : month === 4 || month === 6 || month === 9 || month === 11 ? 30 : 31

/**
 * The stored form of a timestamp already written in it — `YYYY-MM-DDTHH:MM:SS[.fraction]` and `Z` or
 * `±HH:MM`, in years 0002–9998 (so no offset or rounding can move it out of 0001–9999) — which is the text
 * itself; undefined for any other text, which then goes through the pattern. Allocates nothing.
 */
const canonicalUtcIso = (s: string): string | undefined => {
  const n = s.length
  if (n < 20 || s.charCodeAt(4) !== 45 || s.charCodeAt(7) !== 45 || s.charCodeAt(10) !== 84 /* T */ ||
    s.charCodeAt(13) !== 58 || s.charCodeAt(16) !== 58) return undefined
  const year = two(s, 0) * 100 + two(s, 2), month = two(s, 5), day = two(s, 8)
  if (!(year >= 2 && year <= 9998 && month >= 1 && month <= 12 && day >= 1 && day <= daysIn(year, month))) return undefined
  if (!(two(s, 11) <= 23 && two(s, 14) <= 59 && two(s, 17) <= 59)) return undefined
  let i = 19
  if (s.charCodeAt(i) === 46 /* . */) {
    const start = ++i
    while (i < n && digit(s, i) >= 0) i++
    if (i === start || i - start > 9) return undefined
  }
  if (i === n - 1) return s.charCodeAt(i) === 90 /* Z */ ? s : undefined
  if (i !== n - 6 || s.charCodeAt(i + 3) !== 58) return undefined
  const sign = s.charCodeAt(i)
  return (sign === 43 || sign === 45) && two(s, i + 1) <= 15 && two(s, i + 4) <= 59 ? s : undefined
}

/** The parsed parts of an ISO-8601 date-time, or a reason it is not one. */
export const parseTimestamp = (s: string): { readonly utcIso: string } | { readonly error: string } => {
  const utcIso = canonicalUtcIso(s)
  return utcIso !== undefined ? { utcIso } : parseTimestampByPattern(s)
}

/** The stored form of a timestamp, or undefined when it is not one (`parseTimestamp` says why). */
export const timestampUtcIso = (s: string): string | undefined => {
  const utcIso = canonicalUtcIso(s)
  if (utcIso !== undefined) return utcIso
  const r = parseTimestampByPattern(s)
  return "error" in r ? undefined : r.utcIso
}

/** ISO-8601 date-time; without an offset it is read as UTC. Stored as timestamptz (microseconds). */
export const Timestamp = Schema.String.pipe(
  Schema.filter((s) => {
    const r = parseTimestamp(s)
    return "error" in r ? r.error : true
  }, { jsonSchema: { format: "date-time" } })
).annotations({ identifier: "Timestamp", examples: ["2025-01-31T12:00:00.123456Z"] })

export const MAX_PAYLOAD_DEPTH = 64

const tooDeepPayload = `payload must not nest deeper than ${MAX_PAYLOAD_DEPTH} levels`

// Recursion is bounded: it stops at MAX_PAYLOAD_DEPTH + 1 levels, however deep the value.
const jsonbProblem = (v: unknown, depth: number): string | undefined => {
  if (depth > MAX_PAYLOAD_DEPTH) return tooDeepPayload
  switch (typeof v) {
    case "string":
      return storable(v) ? undefined : "payload strings must be valid Unicode text without NUL characters"
    case "number":
      return Number.isFinite(v) ? undefined : "payload numbers must be finite"
    case "boolean":
      return undefined
    case "object": {
      if (v === null) return undefined
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length; i++) {
          const problem = jsonbProblem(v[i], depth + 1)
          if (problem !== undefined) return problem
        }
        return undefined
      }
      const keys = Object.keys(v)
      for (let i = 0; i < keys.length; i++) {
        if (!storable(keys[i])) return "payload keys must be valid Unicode text without NUL characters"
        const problem = jsonbProblem((v as Record<string, unknown>)[keys[i]], depth + 1)
        if (problem !== undefined) return problem
      }
      return undefined
    }
    default:
      return "payload must be a JSON value"
  }
}

/** Why a JSON value cannot be stored as jsonb (the first problem met, depth first), or undefined when it can. */
export const payloadProblem = (value: unknown): string | undefined => jsonbProblem(value, 0)

export const Payload = Schema.Unknown.pipe(
  Schema.filter((v) => payloadProblem(v) ?? true)
).annotations({ identifier: "Payload", description: "Any JSON value (size limit configurable, 64 KiB by default)" })

export const EventInput = Schema.Struct({
  topic: Topic,
  event_id: EventId,
  timestamp: Timestamp,
  source: Schema.optionalWith(Source, { exact: true }),
  payload: Schema.optionalWith(Payload, { exact: true })
}).annotations({
  identifier: "EventInput",
  parseOptions: { errors: "all", onExcessProperty: "ignore" },
  examples: [{
    topic: "orders",
    event_id: "evt-0001",
    timestamp: "2025-01-31T12:00:00.123456Z",
    source: "checkout",
    payload: { amount: 42 }
  }]
})
export type EventInput = typeof EventInput.Type

export const StoredEvent = Schema.Struct({
  seq: Schema.Number.annotations({ description: "Storage order; use as `before` to page backwards" }),
  topic: Schema.String,
  event_id: Schema.String,
  timestamp: Schema.String,
  source: Schema.NullOr(Schema.String),
  payload: Schema.Unknown,
  received_at: Schema.String
}).annotations({
  identifier: "StoredEvent",
  description: "A stored event",
  examples: [{
    seq: 1042,
    topic: "orders",
    event_id: "evt-0001",
    timestamp: "2025-01-31T12:00:00.123456Z",
    source: "checkout",
    payload: { amount: 42 },
    received_at: "2025-01-31T12:00:00.130211Z"
  }]
})
export type StoredEvent = typeof StoredEvent.Type

export const TopicSummary = Schema.Struct({
  topic: Schema.String,
  events: Schema.Number.annotations({ description: "Events stored in this topic" }),
  first_received_at: Schema.String.annotations({ description: "When the topic's oldest stored event was received" }),
  last_received_at: Schema.String.annotations({ description: "When the topic's newest stored event was received" })
}).annotations({
  identifier: "TopicSummary",
  description: "A topic and what it holds",
  examples: [{
    topic: "orders",
    events: 1042,
    first_received_at: "2025-01-31T12:00:00.130211Z",
    last_received_at: "2025-02-01T08:14:51.004917Z"
  }]
})
export type TopicSummary = typeof TopicSummary.Type

export const Processed = Schema.Struct({
  status: Schema.Literal("processed"),
  id: Schema.String,
  topic: Schema.String
}).annotations({
  identifier: "Processed",
  description: "Stored now: the first time this (topic, event_id) arrived. Sent after the commit.",
  examples: [{ status: "processed", id: "evt-0001", topic: "orders" }]
})

export const DroppedDuplicate = Schema.Struct({
  status: Schema.Literal("dropped_duplicate"),
  id: Schema.String,
  topic: Schema.String
}).annotations({
  identifier: "DroppedDuplicate",
  description: "Already stored earlier: nothing was written",
  examples: [{ status: "dropped_duplicate", id: "evt-0001", topic: "orders" }]
})

export const Issue = Schema.Struct({
  path: Schema.String,
  message: Schema.String
}).annotations({ identifier: "ValidationIssue" })
export type Issue = typeof Issue.Type

export const ItemStatus = Schema.Literal("processed", "dropped_duplicate", "rejected")
export type ItemStatus = typeof ItemStatus.Type

export const BatchItemResult = Schema.Struct({
  index: Schema.Number,
  topic: Schema.NullOr(Schema.String),
  event_id: Schema.NullOr(Schema.String),
  status: ItemStatus,
  errors: Schema.optionalWith(Schema.Array(Issue), { exact: true })
}).annotations({ identifier: "BatchItemResult" })
export type BatchItemResult = typeof BatchItemResult.Type

export const BatchResult = Schema.Struct({
  received: Schema.Number,
  processed: Schema.Number,
  duplicates: Schema.Number,
  rejected: Schema.Number,
  results: Schema.Array(BatchItemResult)
}).annotations({
  identifier: "BatchResult",
  description: "Each item's outcome, in input order. Valid items are stored even when others are rejected.",
  examples: [{
    received: 3,
    processed: 1,
    duplicates: 1,
    rejected: 1,
    results: [
      { index: 0, topic: "orders", event_id: "evt-0002", status: "processed" },
      { index: 1, topic: "orders", event_id: "evt-0001", status: "dropped_duplicate" },
      {
        index: 2,
        topic: "orders",
        event_id: null,
        status: "rejected",
        errors: [{ path: "event_id", message: "event_id is required" }]
      }
    ]
  }]
})
export type BatchResult = typeof BatchResult.Type

// Items are decoded as unknown and validated one by one (one bad event must not cost the rest); the
// documents still show them as EventInput.
const BatchItem = Schema.Unknown.annotations({
  jsonSchema: { $ref: "#/components/schemas/EventInput" },
  description: "An EventInput; each item is validated on its own"
})

const batchExample = [
  { topic: "orders", event_id: "evt-0002", timestamp: "2025-01-31T12:00:01Z" },
  { topic: "orders", event_id: "evt-0003", timestamp: "2025-01-31T12:00:02Z", payload: { amount: 7 } }
]

/** `{"events":[…]}` or a bare array; each item is validated on its own so one bad event costs nothing else. */
export const BatchInput = Schema.Union(
  Schema.Struct({ events: Schema.Array(BatchItem) }).annotations({
    description: "The events, up to MAX_BATCH_EVENTS (1,000 by default)",
    examples: [{ events: batchExample }]
  }),
  Schema.Array(BatchItem).annotations({
    description: "The same, as a bare array",
    examples: [batchExample]
  })
).annotations({ identifier: "BatchInput" })
export type BatchInput = typeof BatchInput.Type

export const UptimeStats = Schema.Struct({
  received: Schema.Number,
  unique_processed: Schema.Number,
  duplicate_dropped: Schema.Number,
  rejected: Schema.Number
}).annotations({ identifier: "UptimeStats" })
export type UptimeStats = typeof UptimeStats.Type

export const Announcements = Schema.Struct({
  published: Schema.Number.annotations({ description: "Stored events handed to the broker" }),
  failed: Schema.Number.annotations({ description: "Stored events not announced (broker down or buffer full)" })
}).annotations({ identifier: "Announcements" })
export type Announcements = typeof Announcements.Type

/** The counters one replica reports to the others. */
export const ReplicaCounters = Schema.Struct({
  uptime_stats: UptimeStats,
  storage_failures: Schema.Number,
  announcements: Announcements
}).annotations({ identifier: "ReplicaCounters" })
export type ReplicaCounters = typeof ReplicaCounters.Type

export const ClusterStats = Schema.Struct({
  ...ReplicaCounters.fields,
  replicas: Schema.Number.annotations({ description: "Live replicas whose counters are summed here" })
}).annotations({
  identifier: "ClusterStats",
  description: "The counters summed over every live replica (this one alone without a shared broker)"
})
export type ClusterStats = typeof ClusterStats.Type

export const RetentionStats = Schema.Struct({
  window_seconds: Schema.NullOr(Schema.Number).annotations({
    description: "RETENTION in seconds: events received longer ago are deleted; null: kept forever"
  }),
  deleted: Schema.Number.annotations({ description: "Expired events this replica deleted since it started" })
}).annotations({ identifier: "RetentionStats" })
export type RetentionStats = typeof RetentionStats.Type

export const Stats = Schema.Struct({
  uptime_stats: UptimeStats,
  database_total_rows: Schema.NullOr(Schema.Number),
  storage_failures: Schema.Number,
  uptime_seconds: Schema.Number,
  started_at: Schema.String,
  service: Schema.String,
  announcements: Announcements,
  stream_clients: Schema.Number.annotations({ description: "Live-tail clients connected to this replica" }),
  retention: RetentionStats,
  cluster: ClusterStats
}).annotations({
  identifier: "Stats",
  description: "This replica's counters since it started, the stored rows, and the cluster's sums",
  examples: [{
    uptime_stats: { received: 20000, unique_processed: 14000, duplicate_dropped: 5990, rejected: 10 },
    database_total_rows: 14000,
    storage_failures: 0,
    uptime_seconds: 93.4,
    started_at: "2025-01-31T12:00:00.000Z",
    service: "aggregator",
    announcements: { published: 14000, failed: 0 },
    stream_clients: 1,
    retention: { window_seconds: 2592000, deleted: 0 },
    cluster: {
      uptime_stats: { received: 40000, unique_processed: 28000, duplicate_dropped: 11980, rejected: 20 },
      storage_failures: 0,
      announcements: { published: 28000, failed: 0 },
      replicas: 2
    }
  }]
})
export type Stats = typeof Stats.Type

export const Alive = Schema.Struct({
  status: Schema.Literal("alive"),
  service: Schema.String,
  version: Schema.String,
  uptime_seconds: Schema.Number
}).annotations({
  identifier: "Alive",
  description: "The process is up (whether or not the database is)",
  examples: [{ status: "alive", service: "aggregator", version: VERSION, uptime_seconds: 12.5 }]
})

export const Ready = Schema.Struct({
  status: Schema.Literal("ready"),
  database: Schema.String
}).annotations({
  identifier: "Ready",
  description: "The database answers and is migrated",
  examples: [{ status: "ready", database: "postgresql" }]
})
