import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"
import { type AttemptFailure, type BackoffPolicy, classify, parseRetryAfter, retryDelay } from "../client/Retry.js"

export * from "../client/Retry.js"

export interface RetryOptions {
  readonly maxRetries: number
  readonly policy: BackoffPolicy
}

export interface FinalFailure {
  readonly verdict: "rejected" | "failed"
  readonly failure: AttemptFailure
}

/**
 * Runs `attempt` until it succeeds, is refused for good, or has been retried `maxRetries` times, with the
 * waits of `retryDelay`: the reads around a run (`/ready` aside) retry as the send loop does.
 */
export const withRetries = <A>(
  attempt: Effect.Effect<A, AttemptFailure>,
  options: RetryOptions
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
        yield* Effect.sleep(retryDelay(options.policy, retry, jitter, retryAfter))
        return yield* go(retry + 1)
      })
    })
  return go(0)
}
