import * as Clock from "effect/Clock"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import { randomInt } from "node:crypto"
import * as V8 from "node:v8"
import * as Redacted from "effect/Redacted"
import type { EventInput, StoredEvent } from "../domain/Event.js"
import { AggregatorClient } from "./AggregatorClient.js"
import { sendBatches } from "./BatchSend.js"
import { PublisherSettings, type Settings } from "./Cli.js"
import { startProgress } from "./Progress.js"
import { checkReportTarget, writeReport } from "./Report.js"
import { type AttemptFailure, defaultBackoff, describeFailure, type RetryOptions, withRetries } from "./Retry.js"
import { SendLoop } from "./SendLoop.js"
import { formatSummary } from "./Render.js"
import { type Counts, succeeded, Summary } from "./Summary.js"
import { countersOf, type Observation, sameJson, type ServerCounters, statsShort, verify } from "./Verify.js"
import { Tally } from "./Tally.js"
import { targetOf } from "../client/Wire.js"
import { sample, Workload } from "./Workload.js"

/** The run did not deliver or verify; the summary (already printed) says why. */
export class PublishFailed extends Schema.TaggedError<PublishFailed>()("PublishFailed", { message: Schema.String }) {}

const cpuNow = () => {
  const { system, user } = process.cpuUsage()
  return user + system
}

const note = (text: string) => Console.error(`publisher: ${text}`)

const sameEvent = (sent: EventInput, stored: StoredEvent): boolean =>
  stored.topic === sent.topic &&
  stored.event_id === sent.event_id &&
  stored.timestamp === sent.timestamp &&
  stored.source === (sent.source ?? null) &&
  sameJson(stored.payload, sent.payload ?? null)

const waitUntilReady = Effect.gen(function*() {
  const settings = yield* PublisherSettings
  const aggregator = yield* AggregatorClient
  const waiting = yield* Ref.make(false)
  const schedule = Schedule.exponential("100 millis", 2).pipe(
    Schedule.jittered,
    Schedule.union(Schedule.spaced("2 seconds")),
    Schedule.upTo(settings.readyTimeout)
  )
  yield* aggregator.ready.pipe(
    Effect.tapError((failure) =>
      Effect.flatMap(Ref.getAndSet(waiting, true), (already) =>
        already ? Effect.void : note(`waiting for ${settings.url}/ready (${describeFailure(failure)})`))
    ),
    Effect.retry(schedule),
    Effect.catchAll((failure) =>
      new PublishFailed({
        message: `${settings.url} was not ready within ${Duration.format(settings.readyTimeout)}: ${describeFailure(failure)}`
      })
    )
  )
  if (yield* Ref.get(waiting)) yield* note("the aggregator is ready")
})

/**
 * Runs the send loop to its end; interrupting it closes its connections. Resolves to when the first request
 * went out and when the last answer came, in ms since the process started.
 */
const send = (workload: Workload, tally: Tally, retry: RetryOptions) =>
  Effect.flatMap(PublisherSettings, (settings) =>
    Effect.async<{ readonly first: number; readonly last: number; readonly firstCpu: number; readonly lastCpu: number }>((resume) => {
      const loop = new SendLoop(workload, tally, {
        mode: settings.mode,
        batchSize: settings.batchSize,
        concurrency: settings.concurrency,
        rate: Option.getOrUndefined(settings.rate),
        timeoutMs: Duration.toMillis(settings.timeout),
        maxRetries: retry.maxRetries,
        policy: retry.policy,
        target: targetOf(settings.url, Option.getOrUndefined(Option.map(settings.apiKey, Redacted.value)))
      })
      loop.start((error) => resume(
        error === undefined ? Effect.succeed({
          first: loop.firstRequestAt,
          last: loop.lastAnswerAt,
          firstCpu: loop.firstRequestCpu,
          lastCpu: loop.lastAnswerCpu
        }) : Effect.die(error)
      ))
      return Effect.sync(() => loop.close())
    }))

const retried = <A>(effect: Effect.Effect<A, AttemptFailure>, retry: RetryOptions) =>
  Effect.either(withRetries(effect, retry))

interface Baseline {
  readonly rows: number | null
  readonly seq: number | null
  readonly stats: ServerCounters | null
}

/** The row count, stats counters and newest storage sequence number before sending; null where the server did not say. */
const baseline = (retry: RetryOptions) =>
  Effect.gen(function*() {
    const aggregator = yield* AggregatorClient
    const stats = yield* retried(aggregator.stats, retry)
    const seq = yield* retried(aggregator.newestSeq, retry)
    return {
      rows: Either.isRight(stats) ? stats.right.database_total_rows : null,
      seq: Either.isRight(seq) ? seq.right : null,
      stats: Either.isRight(stats) ? countersOf(stats.right) : null
    } satisfies Baseline
  })

const observe = (
  workload: Workload,
  tally: Tally,
  retry: RetryOptions,
  before: Baseline,
  seed: number
) =>
  Effect.gen(function*() {
    const settings = yield* PublisherSettings
    const aggregator = yield* AggregatorClient
    const quietly = <A>(effect: Effect.Effect<A, AttemptFailure>) => retried(effect, retry)
    const lookup = (key: number) => quietly(aggregator.lookup(workload.topic(key), workload.eventId(key)))

    const after = yield* quietly(aggregator.stats)
    const rowsAfter = Either.isRight(after) ? after.right.database_total_rows : null

    // keys whose "processed" answer may have been lost: stored during this run iff their seq is newer
    let recovered = 0, unresolved = 0
    const unconfirmed = tally.unconfirmedKeys()
    const found = yield* Effect.forEach(unconfirmed, lookup, { concurrency: settings.concurrency })
    for (const result of found) {
      if (Either.isLeft(result)) unresolved++
      else if (Option.isSome(result.right)) {
        if (before.seq === null) unresolved++
        else if (result.right.value.seq > before.seq) recovered++
      }
    }

    const spotKeys = sample(workload.distinctKeys, settings.spotCheck, seed).filter((k) => tally.isAcknowledged(k))
    const spots = yield* Effect.forEach(spotKeys, (key) => Effect.map(lookup(key), (r) => [key, r] as const), {
      concurrency: settings.concurrency
    })
    let missing = 0, mismatched = 0
    for (const [key, result] of spots) {
      if (Either.isLeft(result) || Option.isNone(result.right)) missing++
      else if (!sameEvent(workload.event(key), result.right.value)) mismatched++
    }

    return yield* settleStats(tally.counts(), {
      rows_before: before.rows,
      rows_after: rowsAfter,
      recovered_keys: recovered,
      unresolved_keys: unresolved,
      spot_wanted: settings.spotCheck,
      spot_checked: spotKeys.length,
      spot_missing: missing,
      spot_mismatched: mismatched,
      stats_before: before.stats,
      stats_after: Either.isRight(after) ? countersOf(after.right) : null
    })
  })

/**
 * Re-reads `/stats` while its counters are short of what the publisher was told, up to `--stats-settle`:
 * behind a load balancer the cluster's sums include each other replica's counters as it last published
 * them, and a request whose answer was lost may still be counting.
 */
const settleStats = (counts: Counts, observed: Observation) =>
  Effect.gen(function*() {
    const settings = yield* PublisherSettings
    const aggregator = yield* AggregatorClient
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(settings.statsSettle)
    let current = observed
    if (statsShort(counts, current)) {
      yield* note(`the server's counters are short of what it answered; re-reading /stats for up to ${Duration.format(settings.statsSettle)}`)
    }
    while (statsShort(counts, current) && (yield* Clock.currentTimeMillis) < deadline) {
      yield* Effect.sleep("250 millis")
      const again = yield* Effect.either(aggregator.stats)
      if (Either.isRight(again)) current = { ...current, stats_after: countersOf(again.right) }
    }
    return current
  })

const program = Effect.gen(function*() {
  const settings = yield* PublisherSettings
  // read by V8 at each full collection, so it takes effect from here on (BENCHMARKS.md: what it buys)
  if (settings.heapGrowingPercent > 0) V8.setFlagsFromString(`--heap-growing-percent=${settings.heapGrowingPercent}`)
  const seed = Option.isSome(settings.seed) ? settings.seed.value : randomInt(0, 2 ** 47)
  const workload = new Workload({
    seed,
    events: settings.events,
    duplicates: settings.duplicates,
    topics: settings.topics
  })
  const tally = new Tally(workload.events, workload.distinctKeys)
  const retry: RetryOptions = { maxRetries: settings.maxRetries, policy: defaultBackoff }

  if (Option.isSome(settings.report)) yield* checkReportTarget(settings.report.value)
  const startedAt = new Date(yield* Clock.currentTimeMillis).toISOString()

  yield* waitUntilReady

  const before = settings.verify ? yield* baseline(retry) : { rows: null, seq: null, stats: null }

  const stopProgress = yield* startProgress(tally, workload.events, settings.progressInterval)
  const startedNs = yield* Clock.currentTimeNanos
  const cpuBefore = process.cpuUsage()
  const sent = settings.mode === "batch" && !settings.sendLoop
    ? yield* sendBatches(workload, tally, retry)
    : yield* send(workload, tally, retry)
  const cpu = process.cpuUsage(cpuBefore)
  const elapsedSeconds = Number((yield* Clock.currentTimeNanos) - startedNs) / 1e9
  yield* stopProgress

  const verification = settings.verify
    ? verify(tally.counts(), yield* observe(workload, tally, retry, before, seed))
    : null
  const counts = tally.counts()
  const summary: Summary = {
    url: settings.url,
    mode: settings.mode,
    batch_size: settings.mode === "batch" ? settings.batchSize : null,
    concurrency: settings.concurrency,
    seed,
    run_id: workload.runId,
    started_at: startedAt,
    ...counts,
    elapsed_seconds: Math.round(elapsedSeconds * 1000) / 1000,
    events_per_second: Math.round(((counts.processed + counts.duplicates) / Math.max(elapsedSeconds, 1e-9)) * 10) / 10,
    requests_per_second: Math.round((counts.requests / Math.max(elapsedSeconds, 1e-9)) * 10) / 10,
    latency_ms: tally.latencySummary(),
    failure_reasons: tally.failureReasons(),
    retry_causes: tally.retryCauses(),
    verification,
    send_cpu_seconds: Math.round((cpu.user + cpu.system) / 1000) / 1000,
    startup_seconds: Math.round(sent.first) / 1000,
    startup_cpu_seconds: Math.round(sent.firstCpu / 1000) / 1000,
    wrapup_seconds: Math.round(performance.now() - sent.last) / 1000,
    wrapup_cpu_seconds: Math.round((cpuNow() - sent.lastCpu) / 1000) / 1000
  }
  const ok = succeeded(summary)
  yield* Console.log(settings.json ? JSON.stringify({ ok, ...Schema.encodeSync(Summary)(summary) }, null, 2) : formatSummary(summary))
  // written whether or not the run verified; a run that failed reports that failure, not the report's
  const reported = Option.isSome(settings.report)
    ? yield* Effect.either(writeReport(settings.report.value, summary))
    : Either.void
  if (!ok) {
    if (Either.isLeft(reported)) yield* note(reported.left.message)
    return yield* new PublishFailed({
      message: counts.failed + counts.rejected > 0
        ? `${counts.failed} events failed and ${counts.rejected} were rejected`
        : `verification failed: ${verification?.checks.filter((c) => !c.ok).map((c) => c.name).join("; ")}`
    })
  }
  if (Either.isLeft(reported)) return yield* reported.left
})

/** One publisher run with the given settings. Spans are off: nothing exports them, and they cost (BENCHMARKS.md). */
export const publish = (settings: Settings) =>
  program.pipe(
    Effect.withTracerEnabled(false),
    Effect.scoped,
    Effect.provide(AggregatorClient.Default),
    Effect.provideService(PublisherSettings, settings)
  )
