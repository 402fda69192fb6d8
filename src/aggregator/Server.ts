import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { AggregatorApi } from "../domain/Api.js"
import { Batcher } from "./Batcher.js"
import { Broker } from "./Broker.js"
import { AggregatorConfig } from "./Config.js"
import { makeServer } from "./Connections.js"
import { Database } from "./Database.js"
import { EventStore } from "./EventStore.js"
import { ApiMiddlewareLive, AuthorizationLive, EventsLive, HealthLive, OperationsLive, statusHeaders } from "./Http.js"
import { Draining, DrainOnShutdownLive, NodeServer } from "./Lifecycle.js"
import { LogSummaryLive } from "./LogSummary.js"
import { observeRequests } from "./Observe.js"
import { Retention } from "./Retention.js"
import { Stats } from "./Stats.js"

/** Storage, group commit, the broker and counters: built first, released last (after the HTTP server has drained). */
export const ServicesLive = LogSummaryLive.pipe(
  Layer.provideMerge(Batcher.Default),
  Layer.provideMerge(Broker.Default),
  Layer.provideMerge(Retention.Default),
  Layer.provideMerge(EventStore.Default),
  Layer.provideMerge(Database.Default),
  Layer.provideMerge(Stats.Default),
  Layer.provideMerge(Draining.Default)
)

const ApiLive = HttpApiBuilder.api(AggregatorApi).pipe(
  Layer.provide([HealthLive, EventsLive, OperationsLive]),
  Layer.provide(AuthorizationLive)
)

/**
 * Serves the API behind the request observer, with the headers that go with some statuses added just before
 * each answer is written: a pre-response handler set while the server is started, so that every request's
 * fiber inherits it (what `HttpApiBuilder.serve` does, plus that).
 */
export const ServeLive = Layer.unwrapEffect(
  Effect.map(Effect.all([AggregatorConfig, Draining]), ([config, draining]) =>
    HttpApiBuilder.httpApp.pipe(
      Effect.map((app) =>
        Layer.scopedDiscard(
          Effect.locally(
            HttpServer.serveEffect(app, observeRequests),
            HttpApp.currentPreResponseHandlers,
            Option.some(statusHeaders(config, draining))
          )
        )
      ),
      Layer.unwrapEffect,
      Layer.provide([HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer])
    ))
)

/** The Node HTTP server on the configured host and port. Closing it waits for in-flight requests. */
export const NodeServerLive = Layer.unwrapEffect(
  Effect.map(AggregatorConfig, (config) => {
    const server = makeServer(config)
    return Layer.merge(
      NodeHttpServer.layer(() => server, { port: config.port, host: config.host }),
      Layer.succeed(NodeServer, server)
    )
  })
)

/**
 * The whole aggregator. Layer order is shutdown order: on SIGTERM the server stops accepting and finishes
 * in-flight requests (whose writes the batcher still commits), then the batcher, then the pool close.
 */
export const AggregatorLive = DrainOnShutdownLive.pipe(
  Layer.provide(
    ServeLive.pipe(
      // topic and event_id may be 255 code points (510 UTF-16 units); the router's default cap is 100
      Layer.provide(HttpRouter.setRouterConfig({ maxParamLength: 1024 })),
      Layer.provide(ApiMiddlewareLive),
      Layer.provide(HttpApiSwagger.layer({ path: "/docs" })),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(ApiLive),
      HttpServer.withLogAddress,
      // No span exporter is configured, so per-request server spans are pure cost (URL parsing, header
      // redaction, attributes) on the hot path.
      HttpMiddleware.withTracerDisabledWhen(() => true)
    )
  ),
  Layer.provideMerge(NodeServerLive),
  Layer.provideMerge(ServicesLive),
  Layer.provide(AggregatorConfig.Default)
)
