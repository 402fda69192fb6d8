import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Layer from "effect/Layer"
import { AggregatorConfig } from "./Config.js"
import { DocsLive } from "./http/Docs.js"
import { FastIngestLive } from "./http/FastIngest.js"
import { ApiMiddlewareLive } from "./http/Middleware.js"
import { ApiLive, NodeServerLive, ServeLive } from "./http/Server.js"
import { Batcher } from "./ingest/Batcher.js"
import { Counters } from "./ingest/Counters.js"
import { Broker } from "./live/Broker.js"
import { Draining, DrainOnShutdownLive } from "./ops/Lifecycle.js"
import { LogSummaryLive } from "./ops/LogSummary.js"
import { Database } from "./storage/Database.js"
import { EventStore } from "./storage/EventStore.js"
import { Retention } from "./storage/Retention.js"

/** Storage, group commit, the broker and counters: built first, released last (after the HTTP server has drained). */
export const ServicesLive = LogSummaryLive.pipe(
  Layer.provideMerge(Batcher.Default),
  Layer.provideMerge(Broker.Default),
  Layer.provideMerge(Retention.Default),
  Layer.provideMerge(EventStore.Default),
  Layer.provideMerge(Database.Default),
  Layer.provideMerge(Counters.Default),
  Layer.provideMerge(Draining.Default)
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
      Layer.provide(DocsLive),
      Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: "/openapi.json" })),
      Layer.provide(ApiLive),
      HttpServer.withLogAddress,
      // No span exporter is configured, so per-request server spans are pure cost (URL parsing, header
      // redaction, attributes) on the hot path.
      HttpMiddleware.withTracerDisabledWhen(() => true),
      Layer.merge(FastIngestLive)
    )
  ),
  Layer.provideMerge(NodeServerLive),
  Layer.provideMerge(ServicesLive),
  Layer.provide(AggregatorConfig.Default),
  // No span exporter is configured, so spans (every SQL statement makes some) are pure cost: with the tracer
  // off, Effect makes no-op spans
  Layer.provide(Layer.setTracerEnabled(false))
)
