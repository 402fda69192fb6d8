import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ParseResult from "effect/ParseResult"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import { TimedOut } from "./SocketHttpClient.js"

/** Why one attempt at a request did not produce an answer that can be counted. */
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

/**
 * `retryDelay` as a Schedule over attempt failures: it recurs only for the ones worth repeating, at most
 * `maxRetries` times, each wait at least what the failure's `Retry-After` asked for.
 */
export const retrySchedule = (policy: BackoffPolicy, maxRetries: number) =>
  Schedule.identity<AttemptFailure>().pipe(
    Schedule.whileInput((failure: AttemptFailure) => classify(failure) === "retry"),
    Schedule.intersect(Schedule.recurs(maxRetries)),
    Schedule.addDelayEffect(([failure, retry]) =>
      Effect.zipWith(Random.next, Clock.currentTimeMillis, (jitter, now) => {
        const retryAfter = failure._tag === "Status" ? parseRetryAfter(failure.retryAfter, now) : undefined
        return Duration.millis(retryDelay(policy, retry, jitter, retryAfter))
      })
    )
  )

/**
 * The derived client decodes a declared error status (503 is declared as StorageUnavailable) into its
 * schema and drops the response, and with it `Retry-After`. So 429 and 503 are turned into a
 * `ResponseError` that still carries the response before the client decodes anything; the body is read
 * first so the keep-alive connection can be reused.
 */
export const keepRetryHeaders = HttpClient.transformResponse(
  Effect.flatMap((response) =>
    response.status === 429 || response.status === 503
      ? response.text.pipe(
        Effect.ignore,
        Effect.zipRight(
          Effect.fail(new HttpClientError.ResponseError({ request: response.request, response, reason: "StatusCode" }))
        )
      )
      : Effect.succeed(response)
  )
)

const declaredStatus: Record<string, number> = {
  ValidationFailed: 422,
  PayloadTooLarge: 413,
  UnsupportedMediaType: 415,
  Unauthorized: 401,
  NotFound: 404,
  StorageUnavailable: 503,
  NotReady: 503
}

const causeText = (cause: unknown): string => {
  if (typeof cause !== "object" || cause === null) return String(cause)
  const c = cause as { code?: unknown; message?: unknown; cause?: unknown }
  if (typeof c.code === "string") return c.code
  if (c.cause !== undefined) return causeText(c.cause)
  return typeof c.message === "string" ? c.message : String(cause)
}

/** What one attempt's error means for retrying. */
export const toAttemptFailure = (error: unknown): AttemptFailure => {
  if (HttpClientError.isHttpClientError(error)) {
    if (error._tag === "RequestError") {
      if (error.reason === "Transport" && error.cause instanceof TimedOut) return timedOut
      return error.reason === "Transport"
        ? { _tag: "Transport", message: causeText(error.cause) }
        : { _tag: "Invalid", message: `request ${error.reason.toLowerCase()} error` }
    }
    const { headers, status } = error.response
    return status >= 200 && status < 300
      ? { _tag: "Invalid", message: `unreadable ${status} answer` }
      : { _tag: "Status", status, retryAfter: headers["retry-after"] }
  }
  if (ParseResult.isParseError(error)) return { _tag: "Invalid", message: "answer did not match the API" }
  const tag = typeof error === "object" && error !== null ? (error as { _tag?: unknown })._tag : undefined
  if (typeof tag === "string" && tag in declaredStatus) {
    return { _tag: "Status", status: declaredStatus[tag], retryAfter: undefined }
  }
  return { _tag: "Invalid", message: String(error) }
}

export const timedOut: AttemptFailure = { _tag: "Timeout" }

