import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Random from "effect/Random"
import type { BatchResult } from "../domain/Event.js"
import type { Aggregator } from "./Aggregator.js"
import {
  type AttemptFailure,
  type BackoffPolicy,
  classify,
  describeFailure,
  mayHaveBeenCounted,
  parseRetryAfter,
  retryDelay
} from "./Retry.js"
import type { Tally } from "./Tally.js"
import type { WorkItem } from "./Workload.js"

export interface FinalFailure {
  readonly verdict: "rejected" | "failed"
  readonly failure: AttemptFailure
}

export interface RetryOptions {
  readonly maxRetries: number
  readonly policy: BackoffPolicy
}

/**
 * Runs `attempt` until it succeeds, is refused for good, or has been retried `maxRetries` times. Each
 * retry re-sends the same content (the server's dedup makes that safe) after an exponential, jittered
 * wait that honours `Retry-After`.
 */
export const withRetries = <A>(
  attempt: Effect.Effect<A, AttemptFailure>,
  options: RetryOptions,
  onRetry: (failure: AttemptFailure) => Effect.Effect<void>
): Effect.Effect<A, FinalFailure> => {
  const go = (retry: number): Effect.Effect<A, FinalFailure> =>
    Effect.catchAll(attempt, (failure) => {
      const verdict = classify(failure)
      if (verdict !== "retry") return Effect.fail({ verdict, failure })
      if (retry >= options.maxRetries) return Effect.fail({ verdict: "failed" as const, failure })
      return Effect.gen(function*() {
        const jitter = yield* Random.next
        const now = yield* Clock.currentTimeMillis
        const retryAfter = failure._tag === "Status" ? parseRetryAfter(failure.retryAfter, now) : undefined
        yield* onRetry(failure)
        yield* Effect.sleep(retryDelay(options.policy, retry, jitter, retryAfter))
        return yield* go(retry + 1)
      })
    })
  return go(0)
}

const elapsedSince = (start: bigint) => Effect.map(Clock.currentTimeNanos, (now) => Number(now - start) / 1e6)

/** Sends one event with POST /publish and counts its outcome. */
export const deliverOne = (aggregator: Aggregator, tally: Tally, options: RetryOptions) => (item: WorkItem) =>
  Effect.gen(function*() {
    tally.request()
    const start = yield* Clock.currentTimeNanos
    const result = yield* Effect.either(withRetries(
      aggregator.publish(item.event),
      options,
      (failure) =>
        Effect.sync(() => {
          tally.retry(failure)
          tally.suspect(item.key)
          if (mayHaveBeenCounted(failure)) tally.unanswered(1)
        })
    ))
    if (Either.isRight(result)) {
      tally.latency(yield* elapsedSince(start))
      tally.answered(item.key, result.right)
    } else if (result.left.verdict === "rejected") {
      tally.latency(yield* elapsedSince(start))
      tally.rejected(describeFailure(result.left.failure))
    } else {
      if (mayHaveBeenCounted(result.left.failure)) tally.unanswered(1)
      tally.failed(item.key, describeFailure(result.left.failure))
    }
  })

/** Counts a batch answer item by item; an item the answer does not account for counts as failed. */
export const countBatchAnswer = (tally: Tally, items: ReadonlyArray<WorkItem>, answer: BatchResult): void => {
  const byIndex = new Map(answer.results.map((r) => [r.index, r]))
  items.forEach((item, index) => {
    const r = byIndex.get(index)
    if (r === undefined || r.topic !== item.event.topic || r.event_id !== item.event.event_id) {
      // the server decided it, but the answer does not say how
      tally.unanswered(1)
      tally.failed(item.key, "batch answer did not account for the event")
    } else if (r.status === "rejected") {
      tally.rejected(`batch item: ${r.errors?.map((e) => e.message).join("; ") ?? "rejected"}`)
    } else {
      tally.answered(item.key, r.status)
    }
  })
}

/** Sends a slice of the workload with POST /publish/batch and counts each event's outcome. */
export const deliverBatch = (aggregator: Aggregator, tally: Tally, options: RetryOptions) =>
(items: ReadonlyArray<WorkItem>) =>
  Effect.gen(function*() {
    tally.request()
    const start = yield* Clock.currentTimeNanos
    const result = yield* Effect.either(withRetries(
      aggregator.publishBatch(items.map((item) => item.event)),
      options,
      (failure) =>
        Effect.sync(() => {
          tally.retry(failure)
          for (const item of items) tally.suspect(item.key)
          if (mayHaveBeenCounted(failure)) tally.unanswered(items.length)
        })
    ))
    if (Either.isRight(result)) {
      tally.latency(yield* elapsedSince(start))
      countBatchAnswer(tally, items, result.right)
    } else {
      const reason = describeFailure(result.left.failure)
      if (result.left.verdict === "rejected") tally.latency(yield* elapsedSince(start))
      else if (mayHaveBeenCounted(result.left.failure)) tally.unanswered(items.length)
      for (const item of items) {
        if (result.left.verdict === "rejected") tally.rejected(`batch: ${reason}`)
        else tally.failed(item.key, `batch: ${reason}`)
      }
    }
  })
