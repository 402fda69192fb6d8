import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Effect from "effect/Effect"
import { Broker } from "./Broker.js"

/**
 * One client of `GET /events/stream`. It is subscribed before its answer starts, so nothing stored after
 * the first line is missed; one past STREAM_MAX_CLIENTS gets a 429. The body is the client's Node stream
 * (`StreamHub`), which the server pipes into the response; it ends when the client goes away.
 */
export class LiveTail extends Effect.Service<LiveTail>()("Aggregator/LiveTail", {
  effect: Effect.map(Broker, (broker) => ({
    respond: (request: HttpServerRequest.HttpServerRequest, topic: string | undefined) =>
      Effect.map(broker.subscribe(topic), (tail) => {
        const response = NodeHttpServerRequest.toServerResponse(request)
        if (response.destroyed) tail.destroy()
        else response.once("close", () => tail.destroy())
        return HttpServerResponse.raw(tail, {
          contentType: "text/event-stream",
          headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
        })
      })
  } as const)),
  dependencies: [Broker.Default]
}) {}
