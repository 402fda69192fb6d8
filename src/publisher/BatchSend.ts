import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { type AttemptReport, type Outcome, Publisher } from "../client/Publisher.js"
import { mayHaveBeenCounted } from "../client/Retry.js"
import { PublisherSettings } from "./Cli.js"
import type { RetryOptions } from "./Retry.js"
import type { Tally } from "./Tally.js"
import type { Workload } from "./Workload.js"

const cpuMicros = () => {
  const { system, user } = process.cpuUsage()
  return user + system
}

/** What each attempt means for the run's counters: requests, retries, latency and sends left unanswered. */
const countAttempt = (tally: Tally) => (report: AttemptReport) => {
  if (report.attempt === 1) tally.request()
  const { failure } = report
  if (failure === undefined) return tally.latency(report.elapsedMs)
  if (report.retrying) tally.retry(failure)
  else tally.latency(report.elapsedMs)
  if (mayHaveBeenCounted(failure)) tally.unanswered(report.events)
}

const countOutcome = (tally: Tally, key: number, outcome: Outcome) => {
  if (Either.isRight(outcome)) {
    if (outcome.right.attempts > 1) tally.suspect(key)
    return tally.answered(key, outcome.right.status)
  }
  const error = outcome.left
  if (error._tag === "EventRejected") return tally.rejected(`batch item: ${error.message}`)
  tally.failed(key, `batch: ${error.message}`)
}

/**
 * Batch mode: the workload through the client library's `Publisher`, which gathers the events into
 * `--batch-size` batches, `--concurrency` requests in flight. Twice as many producers as requests keep its
 * buffer full, each handing it one batch's worth of events and counting each outcome. Resolves to when the
 * first events went out and the last were settled, as `SendLoop` reports them for single mode.
 */
export const sendBatches = (workload: Workload, tally: Tally, retry: RetryOptions) =>
  Effect.gen(function*() {
    const settings = yield* PublisherSettings
    const publisher = yield* Publisher
    const cursor = workload.cursor()
    const rate = Option.getOrUndefined(settings.rate)
    let begun = 0, first = 0, firstCpu = 0

    const producer = Effect.gen(function*() {
      for (;;) {
        const index = cursor.position
        const keys: Array<number> = []
        for (let key = cursor.next(); key !== -1; key = keys.length < settings.batchSize ? cursor.next() : -1) {
          keys.push(key)
        }
        if (keys.length === 0) return
        if (first === 0) {
          first = performance.now()
          firstCpu = cpuMicros()
          begun = first
        }
        const wait = rate === undefined ? 0 : begun + (index * 1000) / rate - performance.now()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
        const outcomes = yield* publisher.publishAll(keys.map((key) => workload.event(key)))
        for (let i = 0; i < keys.length; i++) countOutcome(tally, keys[i], outcomes[i])
      }
    })
    yield* Effect.all(Array.from({ length: settings.concurrency + 1 }, () => producer), {
      concurrency: "unbounded",
      discard: true
    })
    return { first, last: performance.now(), firstCpu, lastCpu: cpuMicros() }
  }).pipe(
    Effect.provide(Layer.unwrapEffect(Effect.map(PublisherSettings, (settings) =>
      Publisher.Default({
        url: settings.url,
        apiKey: Option.getOrUndefined(settings.apiKey),
        batchSize: settings.batchSize,
        concurrency: settings.concurrency,
        bufferSize: settings.batchSize * settings.concurrency,
        timeout: settings.timeout,
        maxRetries: retry.maxRetries,
        backoff: retry.policy,
        onAttempt: countAttempt(tally)
      }))))
  )
