import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { makeClient } from "../client/Client.js"
import { PublisherSettings } from "./Cli.js"
import { type AttemptFailure, keepRetryHeaders, timedOut, toAttemptFailure } from "../client/Retry.js"

/**
 * One aggregator's reads, through the client derived from the shared API; every call is one timed attempt.
 * The events themselves go out through the send loop (`SendLoop.ts`).
 */
export class AggregatorClient extends Effect.Service<AggregatorClient>()("Publisher/AggregatorClient", {
  effect: Effect.gen(function*() {
    const settings = yield* PublisherSettings
    // no tracer is installed: trace headers on every request only cost CPU the load test needs
    const base = (yield* HttpClient.HttpClient).pipe(keepRetryHeaders, HttpClient.withTracerPropagation(false))
    const http = Option.match(settings.apiKey, {
      onNone: () => base,
      onSome: (key) => HttpClient.mapRequest(base, HttpClientRequest.bearerToken(key))
    })
    const client = yield* makeClient(settings.url).pipe(Effect.provideService(HttpClient.HttpClient, http))

    const attempt = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<A, AttemptFailure> =>
      effect.pipe(
        Effect.mapError(toAttemptFailure),
        Effect.timeoutFail({ duration: settings.timeout, onTimeout: () => timedOut })
      )

    return {
      ready: attempt(client.health.ready()),
      stats: attempt(client.health.stats()),
      /** The storage sequence number of the newest stored event (0 when there is none). */
      newestSeq: attempt(client.events.list({ urlParams: { limit: 1 } })).pipe(Effect.map((rows) => rows[0]?.seq ?? 0)),
      lookup: (topic: string, eventId: string) =>
        attempt(client.events.get({ path: { topic, event_id: eventId } })).pipe(
          Effect.map(Option.some),
          Effect.catchIf((f) => f._tag === "Status" && f.status === 404, () => Effect.succeedNone)
        )
    } as const
  }),
  // node:http rather than undici, whose WASM parser keeps V8 compiling in the background for seconds of the run;
  // kept alive, so the verification's reads do not each open a connection
  dependencies: [NodeHttpClient.layerWithoutAgent.pipe(Layer.provide(NodeHttpClient.makeAgentLayer({ keepAlive: true })))]
}) {}
