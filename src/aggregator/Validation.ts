import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { EventInput, type Issue, parseTimestamp } from "../domain/Event.js"
import type { NewEvent } from "./EventStore.js"

const pathText = (path: ReadonlyArray<PropertyKey>): string => path.map(String).join(".")

export const issuesOf = (error: ParseResult.ParseError): Array<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((i) => ({ path: pathText(i.path), message: i.message }))

const encoder = new TextEncoder()

/** Turns a decoded event into the row it is stored as, checking the configurable payload size. */
export const toNewEvent = (input: EventInput, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> => {
  const ts = parseTimestamp(input.timestamp)
  if ("error" in ts) return Either.left([{ path: "timestamp", message: ts.error }])
  let payload: string | null = null
  if (input.payload !== undefined) {
    payload = JSON.stringify(input.payload)
    // A UTF-8 byte is at most 3 per UTF-16 unit, so most payloads skip the encode.
    if (payload.length * 3 > maxPayloadBytes && encoder.encode(payload).length > maxPayloadBytes) {
      return Either.left([{ path: "payload", message: `payload must be at most ${maxPayloadBytes} bytes as JSON` }])
    }
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

/** Validates one item of a batch on its own. */
export const validateItem = (item: unknown, maxPayloadBytes: number): Either.Either<NewEvent, Array<Issue>> =>
  Either.flatMap(
    Either.mapLeft(decodeEvent(item), issuesOf),
    (input) => toNewEvent(input, maxPayloadBytes)
  )
