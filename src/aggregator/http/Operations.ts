import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import { AggregatorApi } from "../../domain/Api.js"
import { Batcher } from "../ingest/Batcher.js"
import { Counters } from "../ingest/Counters.js"
import { Broker } from "../live/Broker.js"
import { dashboardPage } from "../ops/Dashboard.js"
import * as Metrics from "../ops/Metrics.js"
import { Database } from "../storage/Database.js"

export const OperationsLive = HttpApiBuilder.group(AggregatorApi, "operations", (handlers) =>
  Effect.gen(function*() {
    const db = yield* Database
    const stats = yield* Counters
    const broker = yield* Broker
    const batcher = yield* Batcher
    // Gauges are read when scraped; counters and histograms move where their events happen.
    const readGauges = Effect.gen(function*() {
      yield* Metric.set(Metrics.pendingEvents, yield* batcher.pendingEvents)
      yield* Metric.set(Metrics.streamClients, yield* broker.streamClients)
      yield* Metric.set(Metrics.uptime, yield* stats.uptimeSeconds)
      yield* Metric.set(Metrics.residentMemory, process.memoryUsage.rss())
      const pool = yield* db.poolUsage
      if (Option.isSome(pool)) {
        yield* Metric.set(Metrics.poolInUse, pool.value.inUse)
        yield* Metric.set(Metrics.poolIdle, pool.value.idle)
        yield* Metric.set(Metrics.poolMax, pool.value.max)
        if (pool.value.waiting !== undefined) yield* Metric.set(Metrics.poolWaiting, pool.value.waiting)
      }
    })
    return handlers
      .handleRaw("metrics", () =>
        readGauges.pipe(
          Effect.zipRight(Metrics.prometheusText),
          Effect.map((text) =>
            HttpServerResponse.text(text, {
              contentType: "text/plain; version=0.0.4; charset=utf-8",
              headers: { "cache-control": "no-store" }
            })
          )
        ))
      .handleRaw("dashboard", () =>
        Effect.succeed(HttpServerResponse.text(dashboardPage, {
          contentType: "text/html; charset=utf-8",
          headers: {
            "cache-control": "no-store",
            // everything the page needs is inline or from this origin
            "content-security-policy":
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "x-content-type-options": "nosniff"
          }
        })))
  }))
