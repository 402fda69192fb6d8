import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"
import type { UptimeStats } from "../../domain/Event.js"
import { Batcher } from "../ingest/Batcher.js"
import { Broker } from "../live/Broker.js"
import { AggregatorConfig } from "../Config.js"
import { Counters } from "../ingest/Counters.js"

export interface SummaryInput {
  readonly previous: UptimeStats
  readonly current: UptimeStats
  readonly seconds: number
}

/** The fields of one summary line: what happened since the last one, as counts and a rate, and the totals. */
export const summaryFields = ({ current, previous, seconds }: SummaryInput) => {
  const received = current.received - previous.received
  return {
    interval_s: Math.round(seconds * 10) / 10,
    received,
    processed: current.unique_processed - previous.unique_processed,
    duplicates: current.duplicate_dropped - previous.duplicate_dropped,
    rejected: current.rejected - previous.rejected,
    events_per_s: seconds > 0 ? Math.round(received / seconds) : 0,
    total_received: current.received,
    total_processed: current.unique_processed,
    total_duplicates: current.duplicate_dropped,
    total_rejected: current.rejected
  }
}

/**
 * One `summary` log line every LOG_SUMMARY_INTERVAL_MS while events flow (none while idle), instead of
 * a line per event or request: counts since the last line, events/s, totals, and what is waiting.
 */
export const LogSummaryLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const stats = yield* Counters
    const batcher = yield* Batcher
    const broker = yield* Broker
    let previous = yield* stats.snapshot
    let previousFailures = yield* stats.storageFailures
    let previousAnnouncementFailures = (yield* broker.announcements).failed
    let since = performance.now()

    const tick = Effect.gen(function*() {
      const current = yield* stats.snapshot
      const failures = yield* stats.storageFailures
      const announcementFailures = (yield* broker.announcements).failed
      const now = performance.now()
      if (
        current.received !== previous.received || failures !== previousFailures ||
        announcementFailures !== previousAnnouncementFailures
      ) {
        yield* Effect.logInfo("summary").pipe(
          Effect.annotateLogs({
            ...summaryFields({ current, previous, seconds: (now - since) / 1000 }),
            storage_failures: failures - previousFailures,
            announcements_failed: announcementFailures - previousAnnouncementFailures,
            pending_events: yield* batcher.pendingEvents,
            stream_clients: yield* broker.streamClients
          })
        )
      }
      previous = current
      previousFailures = failures
      previousAnnouncementFailures = announcementFailures
      since = now
    })

    yield* tick.pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(config.logSummaryIntervalMs))),
      Effect.delay(Duration.millis(config.logSummaryIntervalMs)),
      Effect.forkScoped
    )
  })
)
