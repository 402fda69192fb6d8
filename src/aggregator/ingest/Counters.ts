import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"
import type { UptimeStats } from "../../domain/Event.js"
import * as Metrics from "../ops/Metrics.js"

export interface Outcome {
  readonly processed: number
  readonly duplicates: number
  readonly rejected: number
}

const zero: UptimeStats = { received: 0, unique_processed: 0, duplicate_dropped: 0, rejected: 0 }

/** Adds an outcome to the counters; `received` moves in the same step, so readers never see it ahead. */
export const addOutcome = (s: UptimeStats, o: Outcome): UptimeStats => ({
  received: s.received + o.processed + o.duplicates + o.rejected,
  unique_processed: s.unique_processed + o.processed,
  duplicate_dropped: s.duplicate_dropped + o.duplicates,
  rejected: s.rejected + o.rejected
})

/**
 * This process's counters. An event counts as received when its outcome is decided (stored, duplicate or
 * rejected). The Prometheus counters (`/metrics`) move in the same step as the `/stats` ones.
 */
export class Counters extends Effect.Service<Counters>()("Aggregator/Counters", {
  effect: Effect.gen(function*() {
    const counters = yield* Ref.make(zero)
    const storageFailures = yield* Ref.make(0)
    const startedAt = new Date()
    yield* Metrics.register(
      Metrics.processedEvents,
      Metrics.duplicateEvents,
      Metrics.rejectedEvents,
      Metrics.storageFailures
    )
    // The Prometheus counters move inside the Ref's update: one step, so /stats and /metrics never disagree.
    return {
      record: (o: Outcome) =>
        Ref.update(counters, (s) => {
          if (o.processed > 0) Metrics.processedEvents.unsafeUpdate(o.processed, [])
          if (o.duplicates > 0) Metrics.duplicateEvents.unsafeUpdate(o.duplicates, [])
          if (o.rejected > 0) Metrics.rejectedEvents.unsafeUpdate(o.rejected, [])
          return addOutcome(s, o)
        }),
      recordStorageFailure: (events: number) =>
        Effect.uninterruptible(Effect.zipRight(
          Ref.update(storageFailures, (n) => n + events),
          Metric.incrementBy(Metrics.storageFailures, events)
        )),
      snapshot: Ref.get(counters),
      storageFailures: Ref.get(storageFailures),
      startedAt,
      uptimeSeconds: Effect.sync(() => (Date.now() - startedAt.getTime()) / 1000)
    } as const
  })
}) {}
