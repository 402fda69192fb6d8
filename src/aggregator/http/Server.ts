import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { AggregatorApi } from "../../domain/Api.js"
import { AggregatorConfig } from "../Config.js"
import { type FrontDoorSlot, makeServer } from "./Connections.js"
import { FrontDoorSlotTag } from "./FastIngest.js"
import { AuthorizationLive } from "./Authorization.js"
import { EventsLive } from "./Events.js"
import { HealthLive } from "./Health.js"
import { statusHeaders } from "./Middleware.js"
import { OperationsLive } from "./Operations.js"
import { Ingest } from "../ingest/Publish.js"
import { LiveTail } from "../live/Stream.js"
import { Draining, NodeServer } from "../ops/Lifecycle.js"
import { observeRequests } from "./Observe.js"

/**
 * The API's handlers, group by group, and its security middleware. The services they use (group commit,
 * counters, broker, storage) come from the caller, so the program and a test each decide which instances.
 */
export const ApiLive = HttpApiBuilder.api(AggregatorApi).pipe(
  Layer.provide([HealthLive, EventsLive, OperationsLive]),
  Layer.provide([AuthorizationLive, Ingest.DefaultWithoutDependencies, LiveTail.DefaultWithoutDependencies])
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
    const slot: FrontDoorSlot = { current: undefined }
    const server = makeServer(config, slot)
    return Layer.mergeAll(
      NodeHttpServer.layer(() => server, { port: config.port, host: config.host }),
      Layer.succeed(NodeServer, server),
      Layer.succeed(FrontDoorSlotTag, slot)
    )
  })
)
