import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricState from "effect/MetricState"
import { randomUUID } from "node:crypto"
import { AggregatorApi } from "../domain/Api.js"
import * as Metrics from "./Metrics.js"
import { routesOf } from "./Routes.js"

const routes = routesOf(AggregatorApi)

/**
 * The label for a request: its endpoint as declared (`GET /events/:topic/:event_id`), never the concrete
 * path (which holds topics and event ids) — anything else is `other`, so the label set stays small.
 */
export const routeLabel = (method: string, url: string): string => {
  const path = url.split("?")[0]
  const route = routes.find((r) => r.method === method && r.pattern.test(path))
  return route === undefined ? "other" : `${route.method} ${route.path}`
}

/** A request id a load balancer may have set (`X-Request-Id`), kept when it is short and plain; else a new one. */
export const requestIdOf = (incoming: string | undefined): string =>
  incoming !== undefined && /^[A-Za-z0-9._:-]{1,128}$/.test(incoming) ? incoming : randomUUID()

type Histogram = Metric.Metric<MetricKeyType.MetricKeyType.Histogram, number, MetricState.MetricState.Histogram>

/**
 * Wraps the whole HTTP app, outermost: every request gets a request id (echoed as `X-Request-Id` and put
 * on every log line written while it is handled), its latency goes to the histogram by route and status,
 * and at `LOG_LEVEL=Debug` one line says what it was. Nothing from the body, the query or the path's
 * values is logged.
 */
export const observeRequests = HttpMiddleware.make((app) => {
  const histograms = new Map<string, Histogram>()
  const histogramFor = (route: string, status: number) => {
    const key = `${route} ${status}`
    let h = histograms.get(key)
    if (h === undefined) {
      h = Metric.tagged(Metric.tagged(Metrics.requestDuration, "route", route), "status", String(status))
      histograms.set(key, h)
    }
    return h
  }
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const started = performance.now()
    const requestId = requestIdOf(request.headers["x-request-id"])
    // This middleware runs around the app that already writes the response, so the header and the final
    // status (after error encoding) are taken just before the head is written.
    let status = 500
    yield* HttpApp.appendPreResponseHandler((_, response) =>
      Effect.sync(() => {
        status = response.status
        return HttpServerResponse.setHeader(response, "x-request-id", requestId)
      })
    )
    const exit = yield* app.pipe(Effect.annotateLogs("request_id", requestId), Effect.exit)
    const seconds = (performance.now() - started) / 1000
    const route = routeLabel(request.method, request.url)
    histogramFor(route, status).unsafeUpdate(seconds, [])
    yield* Effect.logDebug("request").pipe(
      Effect.annotateLogs({
        request_id: requestId,
        method: request.method,
        route,
        status,
        duration_ms: Math.round(seconds * 100_000) / 100
      })
    )
    return yield* exit
  })
})
