import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { type AttemptReport, Publisher, type Settled, SettledStatus } from "../client/Publisher.js"
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

/** Counts how each event of one `publishEach` settled; `keys` are the workload's keys of its events, in order. */
const countSettled = (tally: Tally, keys: Int32Array, count: number, settled: Settled) => {
  const { attempts, errors, statuses } = settled
  for (let i = 0; i < count; i++) {
    const key = keys[i]
    const status = statuses[i]
    if (status === SettledStatus.processed || status === SettledStatus.dropped_duplicate) {
      if (attempts[i] > 1) tally.suspect(key)
      tally.answered(key, status === SettledStatus.processed ? "processed" : "dropped_duplicate")
    } else if (status === SettledStatus.rejected) {
      tally.rejected(`batch item: ${errors.get(i)!.message}`)
    } else {
      tally.failed(key, `batch: ${errors.get(i)!.message}`)
    }
  }
}

/**
 * Batch mode: the workload through the client library's `Publisher`, which gathers the events into
 * `--batch-size` batches, `--concurrency` requests in flight. One producer more than there are requests keeps its
 * buffer full, each handing it one batch's worth of keys (`publishEach` makes the events when it encodes them)
 * and counting each outcome. Resolves to when the first events went out and the last were settled, as `SendLoop`
 * reports them for single mode.
 */
export const sendBatches = (workload: Workload, tally: Tally, retry: RetryOptions) =>
  Effect.gen(function*() {
    const settings = yield* PublisherSettings
    const publisher = yield* Publisher
    const cursor = workload.cursor()
    const rate = Option.getOrUndefined(settings.rate)
    let begun = 0, first = 0, firstCpu = 0

    const producer = Effect.gen(function*() {
      const keys = new Int32Array(settings.batchSize)
      const eventAt = (i: number) => workload.event(keys[i])
      for (;;) {
        const index = cursor.position
        let count = 0
        for (let key = cursor.next(); key !== -1; key = count < settings.batchSize ? cursor.next() : -1) {
          keys[count++] = key
        }
        if (count === 0) return
        if (first === 0) {
          first = performance.now()
          firstCpu = cpuMicros()
          begun = first
        }
        const wait = rate === undefined ? 0 : begun + (index * 1000) / rate - performance.now()
        if (wait > 0) yield* Effect.sleep(Duration.millis(wait))
        countSettled(tally, keys, count, yield* publisher.publishEach(count, eventAt))
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
