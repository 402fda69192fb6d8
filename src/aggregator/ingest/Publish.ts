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
import { compareKeys, eventKey, type Inserted, type NewEvent } from "../storage/EventStore.js"
import { Batcher } from "./Batcher.js"
import { scanBatch } from "./BatchScan.js"
import { ClientGone, type JsonBody, parseJsonText, readBody, readJsonBody, utf8Text } from "./Body.js"
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

type BatchBody = { readonly scanned: Array<NewEvent | string> } | JsonBody

interface Verdicts {
  readonly items: ReadonlyArray<unknown>
  readonly checked: ReadonlyArray<Either.Either<NewEvent, ReadonlyArray<Issue>>>
}

/**
 * The valid items to write, each key once (its first occurrence), and per item its position among them, -1
 * when rejected or -2 when it repeats a key. A batch in key order (the usual) finds repeats next to each
 * other; any other goes through a map.
 */
const firstOccurrences = (checked: ReadonlyArray<Either.Either<NewEvent, ReadonlyArray<Issue>>>) => {
  const toWrite: Array<NewEvent> = []
  const slot = new Array<number>(checked.length)
  let last: NewEvent | undefined
  let inOrder = true
  for (let i = 0; i < checked.length && inOrder; i++) {
    const c = checked[i]
    if (Either.isLeft(c)) continue
    if (last !== undefined && compareKeys(last, c.right) > 0) inOrder = false
    last = c.right
  }
  last = undefined
  const firstOf = inOrder ? undefined : new Map<string, number>()
  for (let i = 0; i < checked.length; i++) {
    const c = checked[i]
    if (Either.isLeft(c)) {
      slot[i] = -1
      continue
    }
    const e = c.right
    if (firstOf === undefined) {
      if (last !== undefined && compareKeys(last, e) === 0) {
        slot[i] = -2
        continue
      }
      last = e
    } else {
      const key = eventKey(e.topic, e.event_id)
      if (firstOf.has(key)) {
        slot[i] = -2
        continue
      }
      firstOf.set(key, toWrite.length)
    }
    slot[i] = toWrite.length
    toWrite.push(e)
  }
  return { slot, toWrite }
}

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

    const readEvent = (request: HttpServerRequest.HttpServerRequest) =>
      readJsonBody(request, config.maxBodyBytes, config.acceptUntypedBodies)

    const write = (events: ReadonlyArray<NewEvent>) =>
      batcher.submit(events).pipe(
        Effect.tapErrorTag("StorageUnavailable", () => stats.recordStorageFailure(events.length))
      )

    // A refused single event counts as one rejected event, whatever refused it (body or fields).
    const publishOne = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(
        Effect.catchAll(
          readEvent(request),
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

    // A batch body is scanned into rows in one pass when it is the common case (BatchScan), else parsed.
    const parseBatch = (bytes: Uint8Array): BatchBody | ValidationFailed => {
      const text = utf8Text(bytes)
      if (typeof text !== "string") return text
      const scanned = scanBatch(text, config.maxPayloadBytes)
      return scanned !== undefined ? { scanned } : parseJsonText(text)
    }

    // The items and their verdicts: a scanned row is accepted as it is; an item handed back as text (its
    // syntax already checked, no key twice, shallow) is parsed and validated the usual way.
    const tooMany = (count: number): PayloadTooLarge | undefined =>
      count > config.maxBatchEvents
        ? new PayloadTooLarge({ message: `a batch may hold at most ${config.maxBatchEvents} events; split it`, limit: config.maxBatchEvents })
        : undefined

    const verdicts = (body: BatchBody): Either.Either<Verdicts, ValidationFailed | PayloadTooLarge> => {
      if ("scanned" in body) {
        const scanned = body.scanned
        const refused = tooMany(scanned.length)
        if (refused !== undefined) return Either.left(refused)
        const values = new Array<unknown>(scanned.length)
        const checked = new Array<Either.Either<NewEvent, Array<Issue>>>(scanned.length)
        for (let i = 0; i < scanned.length; i++) {
          const item = scanned[i]
          if (typeof item === "string") {
            values[i] = JSON.parse(item)
            checked[i] = validateItem(values[i], config.maxPayloadBytes, false)
          } else {
            values[i] = item
            checked[i] = Either.right(item)
          }
        }
        return Either.right({ items: values, checked })
      }
      const envelope = batchItems(body.value, body.depth > GUARDED_DEPTH)
      if (Either.isLeft(envelope)) return Either.left(ValidationFailed.fromIssues(envelope.left))
      const items = envelope.right
      const refused = tooMany(items.length)
      if (refused !== undefined) return Either.left(refused)
      const deep = body.depth > GUARDED_DEPTH
      return Either.right({ items, checked: items.map((item) => validateItem(item, config.maxPayloadBytes, deep)) })
    }

    // Each valid item is written once per key (its first occurrence); later repeats are duplicates.
    const publishBatch = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(
        Effect.catchTag(readBody(request, config.maxBodyBytes, config.acceptUntypedBodies, parseBatch), "ClientGone", () => Effect.succeed(undefined)),
        (body): Answer => {
          if (body === undefined) return Effect.succeed(clientGone)
          const verdict = verdicts(body)
          if (Either.isLeft(verdict)) return Effect.fail(verdict.left)
          const { checked, items } = verdict.right
          const { slot, toWrite } = firstOccurrences(checked)
          return Effect.flatMap(write(toWrite), (rows) => {
            const answer = batchAnswer(items, checked, slot, rows)
            return Effect.as(stats.record(answer), HttpServerResponse.text(answer.text, { contentType: "application/json" }))
          })
        }
      )

    return { publishOne, publishBatch } as const
  }),
  dependencies: [Batcher.Default, Counters.Default]
}) {}
