import * as HttpApiClient from "@effect/platform/HttpApiClient"
import * as HttpClient from "@effect/platform/HttpClient"
import type * as HttpClientError from "@effect/platform/HttpClientError"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Effect from "effect/Effect"
import type * as ParseResult from "effect/ParseResult"
import { AggregatorApi } from "../domain/Api.js"
import { NotFound, StorageUnavailable } from "../domain/Errors.js"
import { StoredEvent } from "../domain/Event.js"

/**
 * A typed client for one aggregator, derived from the shared HttpApi definition. Needs an HttpClient.
 * `events.get` is written out because the derived client puts path parameters into the URL unencoded,
 * and a topic or event id may hold `/`, `?`, `#` or `%`.
 */
type Failure = NotFound | StorageUnavailable | HttpClientError.HttpClientError | ParseResult.ParseError

export const makeClient = (
  baseUrl: string,
  options?: {
    /** Applied to each decoded answer, as `HttpApiClient.make`'s option of the same name. */
    readonly transformResponse?: ((decoded: Effect.Effect<unknown, unknown>) => Effect.Effect<unknown, unknown>) | undefined
  }
) =>
  Effect.gen(function*() {
    const derived = yield* HttpApiClient.make(AggregatorApi, { baseUrl, transformResponse: options?.transformResponse })
    const http = (yield* HttpClient.HttpClient).pipe(HttpClient.mapRequest(HttpClientRequest.prependUrl(baseUrl)))
    const get = (
      args: { readonly path: { readonly topic: string; readonly event_id: string } }
    ): Effect.Effect<StoredEvent, Failure> =>
      http.get(`/events/${encodeURIComponent(args.path.topic)}/${encodeURIComponent(args.path.event_id)}`).pipe(
        Effect.flatMap((r): Effect.Effect<StoredEvent, Failure> => {
          switch (r.status) {
            case 200:
              return HttpClientResponse.schemaBodyJson(StoredEvent)(r)
            case 404:
              return Effect.flatMap(HttpClientResponse.schemaBodyJson(NotFound)(r), (e) => Effect.fail(e))
            case 503:
              return Effect.flatMap(HttpClientResponse.schemaBodyJson(StorageUnavailable)(r), (e) => Effect.fail(e))
            default:
              return Effect.flatMap(r.text, (body) => Effect.dieMessage(`GET event: unexpected ${r.status}: ${body}`))
          }
        }),
        Effect.scoped
      )
    return { ...derived, events: { ...derived.events, get } }
  })

export type Client = Effect.Effect.Success<ReturnType<typeof makeClient>>

