import { FetchHttpClient, HttpClient, HttpClientRequest } from "@effect/platform"
import { Effect, Layer } from "effect"
import { existsSync } from "node:fs"
import { type Client, makeClient } from "../../../src/client/Client.js"
import { aggregatorProcess, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres } from "../../support/backends.js"
import { freshDatabase } from "../../support/database.js"

export interface Target {
  readonly url: string
  readonly client: Client
  /** True when this file started the server itself, so no other traffic can move its counters. */
  readonly exclusive: boolean
}

/** The aggregator under test, with the derived client pointed at it. */
export class E2e extends Effect.Tag("e2e/Target")<E2e, Target>() {}

/** `node dist/aggregator` on a fresh database, stopped with SIGTERM and its database dropped afterwards. */
const selfStarted = Effect.gen(function*() {
  if (!existsSync("dist/aggregator/index.js")) {
    return yield* Effect.dieMessage("dist/aggregator is missing: run `npm run build` first (npm run test:e2e does)")
  }
  // With no PostgreSQL server (off CI only) the aggregator runs on its embedded in-memory database.
  const storage = skipWithoutPostgres
    ? { DATA_DIR: "memory://" }
    : {
      DATABASE_URL: (yield* Effect.acquireRelease(
        Effect.promise(() => freshDatabase("e2e")),
        (db) => Effect.promise(() => db.drop())
      )).url
    }
  // set explicitly, so a developer's API_KEYS never leaks into a server started without a key
  const env = { ...storage, API_KEYS: apiKey ?? "" }
  return (yield* aggregatorProcess(env)).url
})

const configured = process.env.AGGREGATOR_URL?.trim().replace(/\/+$/, "")

/** The tester's `API_KEY`: sent as the bearer key on publishes, and the key a self-started aggregator requires. */
export const apiKey = process.env.API_KEY?.trim() || undefined

/**
 * The aggregator at `AGGREGATOR_URL`, or one this file starts for itself when that is unset; ready
 * before the first case runs.
 */
export const E2eLive = Layer.scoped(
  E2e,
  Effect.gen(function*() {
    const exclusive = configured === undefined || configured === ""
    const url = exclusive ? yield* selfStarted : configured!
    yield* Effect.promise(() => waitFor(`${url}/ready`, 60_000))
    const http = yield* HttpClient.HttpClient
    const client = yield* makeClient(url).pipe(
      Effect.provideService(
        HttpClient.HttpClient,
        apiKey === undefined ? http : HttpClient.mapRequest(http, HttpClientRequest.bearerToken(apiKey))
      )
    )
    return { url, client, exclusive }
  })
).pipe(Layer.provide(FetchHttpClient.layer))
