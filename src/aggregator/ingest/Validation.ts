import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import {
  BatchInput,
  EventInput,
  eventIdProblem,
  type Issue,
  parseTimestamp,
  payloadProblem,
  sourceProblem,
  timestampUtcIso,
  topicProblem
} from "../../domain/Event.js"
import type { NewEvent } from "../storage/EventStore.js"

const pathText = (path: ReadonlyArray<PropertyKey>): string => path.map(String).join(".")

export const issuesOf = (error: ParseResult.ParseError): Array<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({ path: pathText(i.path), message: i.message }))

/** The timestamp checked and turned into its stored UTC form in one parse. */
const TimestampToUtc = Schema.transformOrFail(Schema.String, Schema.String, {
  strict: true,
  decode: (s, _, ast) => {
    const r = parseTimestamp(s)
    return "error" in r ? ParseResult.fail(new ParseResult.Type(ast, s, r.error)) : ParseResult.succeed(r.utcIso)
  },
  encode: ParseResult.succeed
})

/** The published event as the aggregator decodes it: `EventInput`, with the timestamp already in its stored form. */
const IngestEvent = Schema.Struct({ ...EventInput.fields, timestamp: TimestampToUtc })

const decodeEvent = Schema.decodeUnknownEither(IngestEvent, { errors: "all", onExcessProperty: "ignore" })
const decodeBatch = Schema.decodeUnknownEither(BatchInput, { errors: "all" })

const encoder = new TextEncoder()

/** Whether a payload's JSON text is longer than `maxPayloadBytes` in UTF-8. */
export const overPayloadLimit = (payload: string, maxPayloadBytes: number): boolean =>
  // A UTF-8 byte is at most 3 per UTF-16 unit, so most payloads skip the encode.
  payload.length * 3 > maxPayloadBytes && encoder.encode(payload).length > maxPayloadBytes

/** The issue for a payload (as JSON text) over the configurable size limit, if it is over. */
const sizeIssue = (payload: string, maxPayloadBytes: number): Issue | undefined =>
  overPayloadLimit(payload, maxPayloadBytes)
    ? { path: "payload", message: `payload must be at most ${maxPayloadBytes} bytes as JSON` }
    : undefined

/**
 * The schema's issues plus the payload-size one, which the schema cannot see (the limit is configuration), so
 * a 422 lists every failing field. A payload the schema already refuses (too deep, NUL, …) is named once.
 */
const withPayloadSize = (issues: Array<Issue>, item: unknown, maxPayloadBytes: number): Array<Issue> => {
  if (typeof item !== "object" || item === null || Array.isArray(item) || !Object.hasOwn(item, "payload")) return issues
  const payload = (item as { readonly payload: unknown }).payload
  if (payload === undefined || payloadProblem(payload) !== undefined) return issues
  const issue = sizeIssue(JSON.stringify(payload), maxPayloadBytes)
  return issue === undefined ? issues : [...issues, issue]
}

/**
 * Bodies nesting deeper than this are looked at field by field before the schema sees them: its error
 * formatter prints the value it refuses, recursively, and overflows the stack from about 2,500 levels. A
 * valid event nests at most 66 levels (its payload at most 64), a batch two more.
 */
export const GUARDED_DEPTH = 100

const nestsDeeperThan = (value: unknown, limit: number): boolean => {
  const stack: Array<[unknown, number]> = [[value, 0]]
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!
    if (typeof v !== "object" || v === null) continue
    if (depth >= limit) return true
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1])
  }
  return false
}

const tooDeep = `a value nested deeper than ${GUARDED_DEPTH} levels`
const placeholders: Record<string, string> = { topic: "x", event_id: "x", timestamp: "2000-01-01T00:00:00Z", source: "x" }
const fieldOrder = ["topic", "event_id", "timestamp", "source", "payload"]

/** Decodes an event that nests too deep to be formatted: each deep field is named, the others decoded as usual. */
const validateDeep = (item: unknown, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> => {
  if (typeof item !== "object" || item === null || Array.isArray(item)) {
    return Either.left([{ path: "", message: `Expected EventInput, actual ${tooDeep}` }])
  }
  const shallow: Record<string, unknown> = { ...item }
  const issues: Array<Issue> = []
  for (const field of Object.keys(placeholders)) {
    if (Object.hasOwn(shallow, field) && nestsDeeperThan(shallow[field], GUARDED_DEPTH - 1)) {
      issues.push({ path: field, message: `Expected string, actual ${tooDeep}` })
      shallow[field] = placeholders[field]
    }
  }
  // deep only in the payload (checked without recursion) or in fields the schema ignores
  if (issues.length === 0) return validateShallow(item, maxPayloadBytes)
  const rank = (i: Issue) => fieldOrder.indexOf(i.path.split(".")[0])
  const rest = Either.match(validateShallow(shallow, maxPayloadBytes), { onLeft: (i) => i, onRight: () => [] })
  return Either.left([...issues, ...rest].sort((a, b) => rank(a) - rank(b)))
}

/**
 * The row of an event the schema accepts (its payload within the size limit), computed by the same field
 * checks the schema's filters call, without building a parse tree or any object but the row; undefined for
 * anything else, which then goes to the schema for its issues (test/aggregator/ingest/validation.test.ts
 * checks that this agrees with the schema on generated events).
 */
export const acceptedEvent = (item: unknown, maxPayloadBytes = Number.POSITIVE_INFINITY): NewEvent | undefined => {
  if (typeof item !== "object" || item === null || Array.isArray(item)) return undefined
  const { topic, event_id, timestamp, source, payload } = item as Record<string, unknown>
  if (typeof topic !== "string" || !Object.hasOwn(item, "topic") || topicProblem(topic) !== undefined) return undefined
  if (typeof event_id !== "string" || !Object.hasOwn(item, "event_id") || eventIdProblem(event_id) !== undefined) return undefined
  if (typeof timestamp !== "string" || !Object.hasOwn(item, "timestamp")) return undefined
  const utcIso = timestampUtcIso(timestamp)
  if (utcIso === undefined) return undefined
  const hasSource = Object.hasOwn(item, "source")
  if (hasSource && (typeof source !== "string" || sourceProblem(source) !== undefined)) return undefined
  let payloadText: string | null = null
  if (Object.hasOwn(item, "payload")) {
    if (payload === undefined || payloadProblem(payload) !== undefined) return undefined
    payloadText = JSON.stringify(payload)
    if (overPayloadLimit(payloadText, maxPayloadBytes)) return undefined
  }
  return {
    topic,
    event_id,
    timestamp: utcIso,
    source: hasSource ? source as string : null,
    payload: payloadText,
    payloadValue: payloadText === null ? null : payload
  }
}

const validateShallow = (item: unknown, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> => {
  const accepted = acceptedEvent(item, maxPayloadBytes)
  return accepted !== undefined ? Either.right(accepted) : validateBySchema(item, maxPayloadBytes)
}

/** The schema's verdict, with every failing field. */
export const validateBySchema = (item: unknown, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> =>
  Either.match(decodeEvent(item), {
    onLeft: (error) => Either.left(withPayloadSize(issuesOf(error), item, maxPayloadBytes)),
    onRight: (input) => toNewEvent(input, maxPayloadBytes)
  })

/** Turns a decoded event into the row it is stored as, checking the configurable payload size. */
const toNewEvent = (input: typeof IngestEvent.Type, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> => {
  let payload: string | null = null
  if (input.payload !== undefined) {
    payload = JSON.stringify(input.payload)
    const issue = sizeIssue(payload, maxPayloadBytes)
    if (issue !== undefined) return Either.left([issue])
  }
  return Either.right({
    topic: input.topic,
    event_id: input.event_id,
    timestamp: input.timestamp,
    source: input.source ?? null,
    payload,
    payloadValue: input.payload ?? null
  })
}

/**
 * Validates one event (a single publish, or one item of a batch) on its own, listing every failing field,
 * and returns the row it is stored as. `deep` says the body it came from nests deeper than `GUARDED_DEPTH`.
 */
export const validateItem = (item: unknown, maxPayloadBytes: number, deep = true): Either.Either<NewEvent, Array<Issue>> =>
  deep && nestsDeeperThan(item, GUARDED_DEPTH) ? validateDeep(item, maxPayloadBytes) : validateShallow(item, maxPayloadBytes)

/** The items of a batch body (`{"events": [...]}` or a bare array), or the issues of a body that is neither. */
export const batchItems = (body: unknown, deep: boolean): Either.Either<ReadonlyArray<unknown>, Array<Issue>> => {
  if (Array.isArray(body)) return Either.right(body)
  if (typeof body === "object" && body !== null && Array.isArray((body as { events?: unknown }).events)) {
    return Either.right((body as { events: ReadonlyArray<unknown> }).events)
  }
  if (deep && nestsDeeperThan(body, GUARDED_DEPTH)) return Either.left([{ path: "", message: `Expected BatchInput, actual ${tooDeep}` }])
  return Either.match(decodeBatch(body), {
    onLeft: (error) => Either.left(issuesOf(error)),
    onRight: (input) => Either.right(Array.isArray(input) ? input : (input as { events: ReadonlyArray<unknown> }).events)
  })
}
