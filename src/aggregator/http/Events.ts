import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Stream from "effect/Stream"
import { AggregatorApi, DEFAULT_LIST_LIMIT } from "../../domain/Api.js"
import { NotFound } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import { Ingest } from "../ingest/Publish.js"
import { LiveTail } from "../live/Stream.js"
import * as Metrics from "../ops/Metrics.js"
import { EventStore } from "../storage/EventStore.js"

const PIECE_BYTES = 64 * 1024

/**
 * `open`, the texts with `separator` between them, and `close`, as UTF-8 pieces of about 64 KiB: a large
 * answer is never one string (a string of megabytes costs a full garbage collection to free), and a small
 * one is one piece.
 */
const textPieces = (open: string, texts: ReadonlyArray<string>, separator: string, close: string): Array<Uint8Array> => {
  const pieces: Array<Uint8Array> = []
  let text = open
  for (let i = 0; i < texts.length; i++) {
    if (text.length >= PIECE_BYTES) {
      pieces.push(Buffer.from(text))
      text = ""
    }
    text += i === 0 ? texts[i] : separator + texts[i]
  }
  pieces.push(Buffer.from(text + close))
  return pieces
}

/** The events group: publishing (ingest), reading back and exporting (storage), topics, and the live tail (live). */
export const EventsLive = HttpApiBuilder.group(AggregatorApi, "events", (handlers) =>
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const ingest = yield* Ingest
    const live = yield* LiveTail
    return handlers
      .handleRaw("publish", ({ request }) => ingest.publishOne(request), { uninterruptible: true })
      .handleRaw("publishBatch", ({ request }) => ingest.publishBatch(request), { uninterruptible: true })
      // At most about LIST_MAX_BYTES a response; `X-Next-Before` carries the cursor whenever older events may
      // follow. The events come as JSON text from the database and are written out, never parsed here.
      .handleRaw("list", ({ urlParams }) =>
        Effect.map(
          store.page({ ...urlParams, limit: urlParams.limit ?? DEFAULT_LIST_LIMIT, maxBytes: config.listMaxBytes }),
          ({ events, last, more }) => {
            const options = { contentType: "application/json", ...(more ? { headers: { "x-next-before": String(last) } } : {}) }
            const pieces = textPieces("[", events, ",", "]")
            return pieces.length === 1
              ? HttpServerResponse.uint8Array(pieces[0], options)
              : HttpServerResponse.stream(Stream.fromIterable(pieces), options)
          }
        ))
      // The first chunk is read before answering, so an unreachable database is a 503; a failure later can only
      // cut the connection (not end the body cleanly), so the client cannot take a partial export for a whole one.
      .handleRaw("export", ({ request, urlParams }) =>
        Effect.map(store.exportNdjson(urlParams, config.listMaxBytes), (chunks) =>
          HttpServerResponse.stream(
            chunks.pipe(
              Stream.tap((events) => Metric.incrementBy(Metrics.exportedEvents, events.length)),
              Stream.mapConcat((events) => textPieces("", events, "\n", "\n")),
              Stream.catchAll(() => {
                NodeHttpServerRequest.toServerResponse(request).destroy()
                return Stream.empty
              })
            ),
            { contentType: "application/x-ndjson", headers: { "cache-control": "no-store" } }
          )))
      .handleRaw("topics", () =>
        Effect.map(store.topicsJson, (json) => HttpServerResponse.text(json, { contentType: "application/json" })))
      .handleRaw("stream", ({ request, urlParams }) => live.respond(request, urlParams.topic))
      .handle("get", ({ path }) =>
        Effect.flatMap(store.get(path.topic, path.event_id), (event) =>
          event === undefined
            ? Effect.fail(new NotFound({ message: `no event ${path.event_id} in topic ${path.topic}` }))
            : Effect.succeed(event)))
  }))
