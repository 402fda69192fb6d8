import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as FiberRefs from "effect/FiberRefs"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import { randomUUID } from "node:crypto"
import * as Metrics from "../ops/Metrics.js"
import { matchOf } from "./Routes.js"

/**
 * The label for a request: its endpoint as declared (`GET /events/:topic/:event_id`), never the concrete
 * path (which holds topics and event ids) — anything else is `other`, so the label set stays small.
 */
export const routeLabel = (request: { readonly method: string; readonly url: string }): string => {
  const route = matchOf(request).route
  return route === undefined ? "other" : `${route.method} ${route.path}`
}

const ids = new WeakMap<HttpServerRequest.HttpServerRequest, string>()

/**
 * `logger` with the request id added to every line logged by a fiber that is handling a request. It is
 * looked up when a line is written (rare), instead of annotating every request's fiber (a FiberRef change
 * and restore on every request).
 */
export const withRequestIds = <Message, Output>(logger: Logger.Logger<Message, Output>) =>
  Logger.make<Message, Output>((options) => {
    const context = FiberRefs.getOrDefault(options.context, FiberRef.currentContext)
    const request = Context.getOption(context, HttpServerRequest.HttpServerRequest)
    const id = Option.isSome(request) ? ids.get(request.value) : undefined
    return logger.log(
      id === undefined || HashMap.has(options.annotations, "request_id")
        ? options
        : { ...options, annotations: HashMap.set(options.annotations, "request_id", id) }
    )
  })

/** A request id a load balancer may have set (`X-Request-Id`), kept when it is short and plain; else a new one. */
export const requestIdOf = (incoming: string | undefined): string =>
  incoming !== undefined && /^[A-Za-z0-9._:-]{1,128}$/.test(incoming) ? incoming : randomUUID()

/**
 * Wraps the whole HTTP app, outermost: every request gets a request id (echoed as `X-Request-Id` and put
 * on every log line written while it is handled, by `withRequestIds`), its latency goes to the histogram
 * by route and status, and at `LOG_LEVEL=Debug` one line says what it was. Nothing from the body, the
 * query or the path's values is logged.
 */
export const observeRequests = HttpMiddleware.make((app) =>
  // `onExit` also sees requests whose client went away (interruption).
  Effect.withFiberRuntime<
    Effect.Effect.Success<typeof app>,
    Effect.Effect.Error<typeof app>,
    Effect.Effect.Context<typeof app>
  >((fiber) => {
    const request = Context.unsafeGet(fiber.currentContext, HttpServerRequest.HttpServerRequest)
    const started = performance.now()
    const requestId = requestIdOf(request.headers["x-request-id"])
    // Set on Node's response, whose head merges it: every answer carries it, errors and 500s included.
    const response = NodeHttpServerRequest.toServerResponse(request)
    response.setHeader("x-request-id", requestId)
    ids.set(request, requestId)
    const debug = LogLevel.lessThan(fiber.getFiberRef(FiberRef.currentMinimumLogLevel), LogLevel.Info)
    return Effect.onExit(app, (exit) => {
      // the status sent, whichever layer below answered; 499 (nginx's "client closed request") when the
      // client went away before its answer was delivered
      const gone = !response.writableFinished && (response.destroyed || Exit.isInterrupted(exit))
      const status = gone ? 499 : response.headersSent ? response.statusCode : 500
      const seconds = (performance.now() - started) / 1000
      const route = routeLabel(request)
      // an event stream lasts as long as its client stays: its duration is not a latency
      if (response.getHeader("content-type") !== "text/event-stream") {
        Metrics.requestDurationOf(route, status).unsafeUpdate(seconds, [])
      }
      // request_id: added by withRequestIds, as for any line logged while the request is handled
      return debug
        ? Effect.logDebug("request").pipe(
          Effect.annotateLogs({ method: request.method, route, status, duration_ms: Math.round(seconds * 100_000) / 100 })
        )
        : Effect.void
    })
  })
)
