import { HttpApiBuilder, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
import { AggregatorApi } from "../domain/Api.js"
import { AggregatorConfig } from "./Config.js"
import { Database } from "./Database.js"
import { EventStore } from "./EventStore.js"
import { ApiMiddlewareLive, EventsLive, HealthLive } from "./Http.js"
import { Stats } from "./Stats.js"

const ServicesLive = EventStore.Default.pipe(
  Layer.provideMerge(Database.Default),
  Layer.provideMerge(Stats.Default)
)

const ApiLive = HttpApiBuilder.api(AggregatorApi).pipe(
  Layer.provide([HealthLive, EventsLive])
)

/** The aggregator's HTTP app over its services; needs an HttpServer and the config. */
export const AggregatorHttp = HttpApiBuilder.serve().pipe(
  Layer.provide(ApiMiddlewareLive),
  Layer.provide(ApiLive),
  Layer.provide(ServicesLive)
)

/** The Node HTTP server on the configured host and port. */
export const NodeServerLive = Layer.unwrapEffect(
  Effect.map(AggregatorConfig, (config) => NodeHttpServer.layer(createServer, { port: config.port, host: config.host }))
)

/** The whole aggregator: HTTP server, API, storage and counters, from configuration. */
export const AggregatorLive = AggregatorHttp.pipe(
  HttpServer.withLogAddress,
  Layer.provideMerge(NodeServerLive),
  Layer.provide(AggregatorConfig.Default)
)
