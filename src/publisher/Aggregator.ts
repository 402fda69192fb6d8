import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import { makeClient } from "../client/Client.js"
import { PublisherSettings } from "./Cli.js"
import type { AttemptFailure } from "./Retry.js"

/**
 * The derived client decodes a declared error status (503 is declared as StorageUnavailable) into its
 * schema and drops the response, and with it `Retry-After`. So 429 and 503 are turned into a
 * `ResponseError` that still carries the response before the client decodes anything; the body is read
 * first so the keep-alive connection can be reused.
 */
const keepRetryHeaders = HttpClient.transformResponse(
  Effect.flatMap((response) =>
    response.status === 429 || response.status === 503
      ? response.text.pipe(
        Effect.ignore,
        Effect.zipRight(
          Effect.fail(new HttpClientError.ResponseError({ request: response.request, response, reason: "StatusCode" }))
        )
      )
      : Effect.succeed(response)
  )
)

const declaredStatus: Record<string, number> = {
  ValidationFailed: 422,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  Unauthorized: 401,
  NotFound: 404,
  StorageUnavailable: 503,
  NotReady: 503
}

const causeText = (cause: unknown): string => {
  if (typeof cause !== "object" || cause === null) return String(cause)
  const c = cause as { code?: unknown; message?: unknown; cause?: unknown }
  if (typeof c.code === "string") return c.code
  if (c.cause !== undefined) return causeText(c.cause)
  return typeof c.message === "string" ? c.message : String(cause)
}

/** What one attempt's error means for retrying. */
export const toAttemptFailure = (error: unknown): AttemptFailure => {
  if (HttpClientError.isHttpClientError(error)) {
    if (error._tag === "RequestError") {
      return error.reason === "Transport"
        ? { _tag: "Transport", message: causeText(error.cause) }
        : { _tag: "Invalid", message: `request ${error.reason.toLowerCase()} error` }
    }
    const { headers, status } = error.response
    return status >= 200 && status < 300
      ? { _tag: "Invalid", message: `unreadable ${status} answer` }
      : { _tag: "Status", status, retryAfter: headers["retry-after"] }
  }
  if (ParseResult.isParseError(error)) return { _tag: "Invalid", message: "answer did not match the API" }
  const tag = typeof error === "object" && error !== null ? (error as { _tag?: unknown })._tag : undefined
  if (typeof tag === "string" && tag in declaredStatus) {
    return { _tag: "Status", status: declaredStatus[tag], retryAfter: undefined }
  }
  return { _tag: "Invalid", message: String(error) }
}

const timedOut: AttemptFailure = { _tag: "Timeout" }

/**
 * One aggregator's reads, through the client derived from the shared API; every call is one timed attempt.
 * The events themselves go out through the send loop (`SendLoop.ts`).
 */
export class Aggregator extends Effect.Service<Aggregator>()("Publisher/Aggregator", {
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
