import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { EventInput, type Issue, parseTimestamp, payloadProblem } from "../domain/Event.js"
import type { NewEvent } from "./EventStore.js"

const pathText = (path: ReadonlyArray<PropertyKey>): string => path.map(String).join(".")

export const issuesOf = (error: ParseResult.ParseError): Array<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({ path: pathText(i.path), message: i.message }))

const encoder = new TextEncoder()

/** The issue for a payload (as JSON text) over the configurable size limit, if it is over. */
const sizeIssue = (payload: string, maxPayloadBytes: number): Issue | undefined =>
  // A UTF-8 byte is at most 3 per UTF-16 unit, so most payloads skip the encode.
  payload.length * 3 > maxPayloadBytes && encoder.encode(payload).length > maxPayloadBytes
    ? { path: "payload", message: `payload must be at most ${maxPayloadBytes} bytes as JSON` }
    : undefined

/**
 * The schema's issues plus the payload-size one, which the schema cannot see (the limit is configuration), so
 * a 422 lists every failing field. `body` is the event as the client sent it; a payload the schema already
 * refuses (too deep, NUL, …) is named once, by the schema.
 */
export const withPayloadSize = (issues: Array<Issue>, body: unknown, maxPayloadBytes: number): Array<Issue> => {
  if (typeof body !== "object" || body === null || Array.isArray(body) || !Object.hasOwn(body, "payload")) return issues
  const payload = (body as { readonly payload: unknown }).payload
  if (payload === undefined || payloadProblem(payload) !== undefined) return issues
  const issue = sizeIssue(JSON.stringify(payload), maxPayloadBytes)
  return issue === undefined ? issues : [...issues, issue]
}

/** Turns a decoded event into the row it is stored as, checking the configurable payload size. */
export const toNewEvent = (input: EventInput, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> => {
  const ts = parseTimestamp(input.timestamp)
  if ("error" in ts) return Either.left([{ path: "timestamp", message: ts.error }])
  let payload: string | null = null
  if (input.payload !== undefined) {
    payload = JSON.stringify(input.payload)
    const issue = sizeIssue(payload, maxPayloadBytes)
    if (issue !== undefined) return Either.left([issue])
  }
  return Either.right({
    topic: input.topic,
    event_id: input.event_id,
    timestamp: ts.utcIso,
    source: input.source ?? null,
    payload,
    payloadValue: input.payload ?? null
  })
}

const decodeEvent = Schema.decodeUnknownEither(EventInput, { errors: "all", onExcessProperty: "ignore" })

/** Validates one item of a batch on its own, listing every failing field. */
export const validateItem = (item: unknown, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> =>
  Either.match(decodeEvent(item), {
    onLeft: (error) => Either.left(withPayloadSize(issuesOf(error), item, maxPayloadBytes)),
    onRight: (input) => toNewEvent(input, maxPayloadBytes)
  })
