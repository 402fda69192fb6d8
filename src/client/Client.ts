import { HttpApiClient } from "@effect/platform"
import type { Effect } from "effect"
import { AggregatorApi } from "../domain/Api.js"

/** A typed client for one aggregator, derived from the shared HttpApi definition. Needs an HttpClient. */
export const makeClient = (baseUrl: string) => HttpApiClient.make(AggregatorApi, { baseUrl })

export type Client = Effect.Effect.Success<ReturnType<typeof makeClient>>
