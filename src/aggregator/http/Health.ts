import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { AggregatorApi } from "../../domain/Api.js"
import { VERSION } from "../../domain/Version.js"
import { Counters } from "../ingest/Counters.js"
import { Broker } from "../live/Broker.js"
import { Database } from "../storage/Database.js"
import { Retention } from "../storage/Retention.js"
import { EventStore } from "../storage/EventStore.js"

export const HealthLive = HttpApiBuilder.group(AggregatorApi, "health", (handlers) =>
  Effect.gen(function*() {
    const db = yield* Database
    const store = yield* EventStore
    const stats = yield* Counters
    const broker = yield* Broker
    const expiry = yield* Retention
    return handlers
      .handle("alive", () =>
        Effect.map(stats.uptimeSeconds, (uptime_seconds) => ({
          status: "alive" as const,
          service: "aggregator",
          version: VERSION,
          uptime_seconds
        })))
      .handle("ready", () => db.readiness)
      .handle("stats", () =>
        Effect.gen(function*() {
          const [uptime_stats, total, storage_failures, uptime_seconds, announcements, stream_clients, retention, cluster] =
            yield* Effect.all([
              stats.snapshot,
              Effect.option(store.totalRows),
              stats.storageFailures,
              stats.uptimeSeconds,
              broker.announcements,
              broker.streamClients,
              expiry.stats,
              broker.cluster
            ], { concurrency: "unbounded" })
          return {
            uptime_stats,
            database_total_rows: Option.getOrNull(total),
            storage_failures,
            uptime_seconds,
            started_at: stats.startedAt.toISOString(),
            service: "aggregator",
            announcements,
            stream_clients,
            retention,
            cluster
          }
        }))
  }))
