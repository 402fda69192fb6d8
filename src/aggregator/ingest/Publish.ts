import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import {
  type Overloaded,
  PayloadTooLarge,
  type StorageUnavailable,
  type UnsupportedMediaType,
  ValidationFailed
} from "../../domain/Errors.js"
import type { BatchItemResult, Issue } from "../../domain/Event.js"
import { AggregatorConfig } from "../Config.js"
import { eventKey, type Inserted, type NewEvent } from "../storage/EventStore.js"
import { Batcher } from "./Batcher.js"
import { ClientGone, readJsonBody } from "./Body.js"
import { Counters } from "./Counters.js"
import { batchItems, GUARDED_DEPTH, validateItem } from "./Validation.js"

/** What a publish answers with, or the error the framework encodes with the status its schema declares. */
export type Answer = Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  ValidationFailed | PayloadTooLarge | UnsupportedMediaType | Overloaded | StorageUnavailable
>

const field = (item: unknown, name: string): string | null => {
  if (typeof item !== "object" || item === null) return null
  const v = (item as Record<string, unknown>)[name]
  return typeof v === "string" ? v : null
}

const storedOne = { processed: 1, duplicates: 0, rejected: 0 } as const
const duplicateOne = { processed: 0, duplicates: 1, rejected: 0 } as const
const rejectedOne = { processed: 0, duplicates: 0, rejected: 1 } as const
// a body cut off by the client going away is no event, and nobody reads this answer
const clientGone = HttpServerResponse.empty({ status: 499 })

const statusText = { processed: "\"processed\"", dropped_duplicate: "\"dropped_duplicate\"" } as const

/**
 * The batch answer (`BatchResult`, fields in the schema's order) written as JSON text in one pass: no result
 * objects for the usual item, and a topic repeated from the item before is escaped once.
 */
const batchAnswer = (
  items: ReadonlyArray<unknown>,
  checked: ReadonlyArray<Either.Either<NewEvent, ReadonlyArray<Issue>>>,
  slot: ReadonlyArray<number>,
  rows: Inserted
) => {
  let processed = 0, duplicates = 0, rejected = 0
  let results = ""
  let lastTopic: string | undefined
  let topicJson = ""
  for (let index = 0; index < checked.length; index++) {
    const c = checked[index]
    if (index > 0) results += ","
    if (Either.isLeft(c)) {
      rejected++
      const result: BatchItemResult = {
        index,
        topic: field(items[index], "topic"),
        event_id: field(items[index], "event_id"),
        status: "rejected",
        errors: c.left
      }
      results += JSON.stringify(result)
      continue
    }
    const stored = slot[index] >= 0 && rows[slot[index]] !== undefined
    if (stored) processed++
    else duplicates++
    if (c.right.topic !== lastTopic) {
      lastTopic = c.right.topic
      topicJson = JSON.stringify(lastTopic)
    }
    results += `{"index":${index},"topic":${topicJson},"event_id":${JSON.stringify(c.right.event_id)},"status":${
      statusText[stored ? "processed" : "dropped_duplicate"]
    }}`
  }
  return {
    processed,
    duplicates,
    rejected,
    text: `{"received":${items.length},"processed":${processed},"duplicates":${duplicates},"rejected":${rejected},"results":[${results}]}`
  }
}

/**
 * `POST /publish` and `POST /publish/batch`, served raw: the body is read and parsed once, validated by one
 * compiled decoder, written through the group commit, counted, and answered — the HttpApi definition stays
 * the contract (OpenAPI, client).
 */
export class Ingest extends Effect.Service<Ingest>()("Aggregator/Ingest", {
  effect: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const batcher = yield* Batcher
    const stats = yield* Counters

    const readBody = (request: HttpServerRequest.HttpServerRequest) =>
      readJsonBody(request, config.maxBodyBytes, config.acceptUntypedBodies)

    const write = (events: ReadonlyArray<NewEvent>) =>
      batcher.submit(events).pipe(
        Effect.tapErrorTag("StorageUnavailable", () => stats.recordStorageFailure(events.length))
      )

    // A refused single event counts as one rejected event, whatever refused it (body or fields).
    const publishOne = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(
        Effect.catchAll(
          readBody(request),
          (e) => e instanceof ClientGone ? Effect.succeed(undefined) : Effect.zipRight(stats.record(rejectedOne), Effect.fail(e))
        ),
        (body): Answer => {
          if (body === undefined) return Effect.succeed(clientGone)
          const checked = validateItem(body.value, config.maxPayloadBytes, body.depth > GUARDED_DEPTH)
          if (Either.isLeft(checked)) {
            return Effect.zipRight(stats.record(rejectedOne), Effect.fail(ValidationFailed.fromIssues(checked.left)))
          }
          const event = checked.right
          return Effect.flatMap(write([event]), ([row]) =>
            Effect.as(
              stats.record(row !== undefined ? storedOne : duplicateOne),
              HttpServerResponse.unsafeJson(
                { status: row !== undefined ? "processed" : "dropped_duplicate", id: event.event_id, topic: event.topic },
                { status: row !== undefined ? 201 : 200 }
              )
            ))
        }
      )

    // Each valid item is written once per key (its first occurrence); later repeats are duplicates.
    const publishBatch = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(Effect.catchTag(readBody(request), "ClientGone", () => Effect.succeed(undefined)), (body): Answer => {
        if (body === undefined) return Effect.succeed(clientGone)
        const deep = body.depth > GUARDED_DEPTH
        const envelope = batchItems(body.value, deep)
        if (Either.isLeft(envelope)) return Effect.fail(ValidationFailed.fromIssues(envelope.left))
        const items = envelope.right
        if (items.length > config.maxBatchEvents) {
          return Effect.fail(
            new PayloadTooLarge({ message: `a batch may hold at most ${config.maxBatchEvents} events; split it`, limit: config.maxBatchEvents })
          )
        }
        const checked = items.map((item) => validateItem(item, config.maxPayloadBytes, deep))
        const firstOf = new Map<string, number>()
        const toWrite: Array<NewEvent> = []
        const slot = checked.map((c) => {
          if (Either.isLeft(c)) return -1
          const key = eventKey(c.right.topic, c.right.event_id)
          if (firstOf.has(key)) return -2
          firstOf.set(key, toWrite.length)
          toWrite.push(c.right)
          return toWrite.length - 1
        })
        return Effect.flatMap(write(toWrite), (rows) => {
          const answer = batchAnswer(items, checked, slot, rows)
          return Effect.as(
            stats.record(answer),
            HttpServerResponse.text(answer.text, { contentType: "application/json" })
          )
        })
      })

    return { publishOne, publishBatch } as const
  }),
  dependencies: [Batcher.Default, Counters.Default]
}) {}
