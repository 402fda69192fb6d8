import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Random from "effect/Random"

/** Why one attempt at a request did not produce an answer the publisher can count. */
export type AttemptFailure =
  | { readonly _tag: "Status"; readonly status: number; readonly retryAfter: string | undefined }
  | { readonly _tag: "Transport"; readonly message: string }
  | { readonly _tag: "Timeout" }
  | { readonly _tag: "Invalid"; readonly message: string }

/**
 * - `retry`: the server could not take it now (connection error, timeout, 429, 502/503/504); send it again.
 * - `rejected`: the server refused this content (any other 4xx); sending it again cannot help.
 * - `failed`: anything else (500, an unreadable answer); final.
 */
export type Verdict = "retry" | "rejected" | "failed"

const RETRYABLE_STATUS = new Set([429, 502, 503, 504])

export const classify = (failure: AttemptFailure): Verdict => {
  switch (failure._tag) {
    case "Transport":
    case "Timeout":
      return "retry"
    case "Invalid":
      return "failed"
    case "Status":
      if (RETRYABLE_STATUS.has(failure.status)) return "retry"
      return failure.status >= 400 && failure.status < 500 ? "rejected" : "failed"
  }
}

/**
 * Whether the server may have decided the events of an attempt that failed so — stored them or counted them
 * in `/stats` — without the publisher learning how: no answer came (connection error, timeout), the answer
 * was unreadable, or a 5xx that promises nothing. The aggregator answers 429 and 503 only for writes it
 * refused or that did not commit, and counts neither as received (a commit hidden behind a 503 is counted
 * in `storage_failures`); a 4xx is counted as rejected on both sides.
 */
export const mayHaveBeenCounted = (failure: AttemptFailure): boolean =>
  failure._tag !== "Status" || (failure.status >= 500 && failure.status !== 503)

export const describeFailure = (failure: AttemptFailure): string => {
  switch (failure._tag) {
    case "Status":
      return `HTTP ${failure.status}`
    case "Transport":
      return `connection error: ${failure.message}`
    case "Timeout":
      return "timed out"
    case "Invalid":
      return failure.message
  }
}

/** Milliseconds a `Retry-After` value asks for (delta-seconds or an HTTP date), if it is readable. */
export const parseRetryAfter = (value: string | undefined, nowMs: number): number | undefined => {
  if (value === undefined) return undefined
  const text = value.trim()
  if (/^\d+$/.test(text)) return Number(text) * 1000
  const date = Date.parse(text)
  return Number.isNaN(date) ? undefined : Math.max(0, date - nowMs)
}

export interface BackoffPolicy {
  readonly baseMs: number
  readonly maxDelayMs: number
  /** The longest `Retry-After` that is honoured in full. */
  readonly maxRetryAfterMs: number
}

export const defaultBackoff: BackoffPolicy = { baseMs: 100, maxDelayMs: 5_000, maxRetryAfterMs: 60_000 }

/**
 * The wait before retry number `retry` (0 for the first): exponential from `baseMs`, capped, with "equal
 * jitter" (`jitter` in [0, 1) picks between half and all of it) so concurrent senders spread out, and
 * never shorter than what the server asked for with `Retry-After`.
 */
export const retryDelay = (
  policy: BackoffPolicy,
  retry: number,
  jitter: number,
  retryAfterMs: number | undefined
): number => {
  const exponential = Math.min(policy.maxDelayMs, policy.baseMs * 2 ** Math.min(retry, 30))
  const backoff = exponential / 2 + (exponential / 2) * jitter
  const asked = retryAfterMs === undefined ? 0 : Math.min(retryAfterMs, policy.maxRetryAfterMs)
  return Math.max(backoff, asked)
}

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
