import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Effect from "effect/Effect"
import { AggregatorApi, DEFAULT_LIST_LIMIT } from "../../domain/Api.js"
import { NotFound } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import { Ingest } from "../ingest/Publish.js"
import { LiveTail } from "../live/Stream.js"
import { EventStore } from "../storage/EventStore.js"

/** The events group: publishing (ingest), reading back (storage) and the live tail (live). */
export const EventsLive = HttpApiBuilder.group(AggregatorApi, "events", (handlers) =>
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const ingest = yield* Ingest
    const live = yield* LiveTail
    return handlers
      .handleRaw("publish", ({ request }) => ingest.publishOne(request), { uninterruptible: true })
      .handleRaw("publishBatch", ({ request }) => ingest.publishBatch(request), { uninterruptible: true })
      // At most about LIST_MAX_BYTES a response; `X-Next-Before` carries the cursor whenever older events may follow.
      .handle("list", ({ request, urlParams }) =>
        Effect.map(
          store.page({
            limit: urlParams.limit ?? DEFAULT_LIST_LIMIT,
            maxBytes: config.listMaxBytes,
            ...(urlParams.topic !== undefined ? { topic: urlParams.topic } : {}),
            ...(urlParams.before !== undefined ? { before: urlParams.before } : {})
          }),
          ({ events, more }) => {
            if (more) NodeHttpServerRequest.toServerResponse(request).setHeader("x-next-before", String(events[events.length - 1].seq))
            return events
          }
        ))
      .handleRaw("stream", ({ request, urlParams }) =>
        Effect.map(live.frames(urlParams.topic, NodeHttpServerRequest.toServerResponse(request)), (frames) =>
          HttpServerResponse.stream(frames, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })))
      .handle("get", ({ path }) =>
        Effect.flatMap(store.get(path.topic, path.event_id), (event) =>
          event === undefined
            ? Effect.fail(new NotFound({ message: `no event ${path.event_id} in topic ${path.topic}` }))
            : Effect.succeed(event)))
  }))
