import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { type BatchItemResult, type BatchResult, type EventInput, Issue } from "../domain/Event.js"
import { makeClient } from "./Client.js"
import * as SocketHttpClient from "./SocketHttpClient.js"
import {
  type AttemptFailure,
  type BackoffPolicy,
  classify,
  defaultBackoff,
  describeFailure,
  keepRetryHeaders,
  retrySchedule,
  timedOut,
  toAttemptFailure
} from "./Retry.js"

/** Stored: `processed` the first time, `dropped_duplicate` when it had been stored before. Both are durable. */
export interface Delivered {
  readonly status: "processed" | "dropped_duplicate"
  /** Requests it took; more than 1 means an earlier attempt may have reached the server too. */
  readonly attempts: number
}

/** The server refused the event (a 422 item, or a 4xx for its whole request): sending it again cannot help. */
export class EventRejected extends Schema.TaggedError<EventRejected>()("EventRejected", {
  topic: Schema.String,
  event_id: Schema.String,
  message: Schema.String,
  issues: Schema.Array(Issue)
}) {}

/**
 * Not known to be stored: the retries ran out, the answer was not the API's, or the publisher was closed.
 * An attempt may have reached the server, so it may be stored all the same: publishing it again is safe.
 */
export class DeliveryFailed extends Schema.TaggedError<DeliveryFailed>()("DeliveryFailed", {
  topic: Schema.String,
  event_id: Schema.String,
  message: Schema.String,
  attempts: Schema.Number
}) {}

export type PublishError = EventRejected | DeliveryFailed
export type Outcome = Either.Either<Delivered, PublishError>

/** One request's attempt, as it ended. */
export interface AttemptReport {
  readonly events: number
  /** 1 for the first. */
  readonly attempt: number
  /** From the start of the first attempt to the end of this one. */
  readonly elapsedMs: number
  /** Absent when the server answered. */
  readonly failure: AttemptFailure | undefined
  /** Whether the same events go out again. */
  readonly retrying: boolean
}

export interface PublisherOptions {
  /** The aggregator's base URL. */
  readonly url: string
  /** Sent as `Authorization: Bearer <key>`. */
  readonly apiKey?: Redacted.Redacted | undefined
  /** Most events in one `POST /publish/batch` (the server's MAX_BATCH_EVENTS is 1,000 by default). Default 500. */
  readonly batchSize?: number | undefined
  /** How long a batch that is not full waits for more events. Default 5 ms. */
  readonly linger?: Duration.DurationInput | undefined
  /** Events accepted and not yet stored, at most; `publish` waits for room beyond it. Default 10,000. */
  readonly bufferSize?: number | undefined
  /** Requests in flight at once. Default 4. */
  readonly concurrency?: number | undefined
  /** Each attempt's limit; a timed-out attempt is retried. Default 10 s. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Retries of a request after a connection error, timeout, 429 or 502/503/504. Default 10. */
  readonly maxRetries?: number | undefined
  readonly backoff?: BackoffPolicy | undefined
  /** Called after each attempt at a request, for counting; must not throw. */
  readonly onAttempt?: ((report: AttemptReport) => void) | undefined
}

const positive = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be a positive integer`, validation: (n) => n > 0 }),
    Config.withDefault(fallback)
  )

/** The options from the environment: AGGREGATOR_URL, API_KEY and the PUBLISH_* limits. */
export const publisherConfig: Config.Config<PublisherOptions> = Config.all({
  url: Config.string("AGGREGATOR_URL").pipe(
    Config.validate({ message: "AGGREGATOR_URL must be an absolute URL", validation: (s) => URL.canParse(s) }),
    Config.withDefault("http://localhost:8080")
  ),
  apiKey: Config.option(Config.redacted("API_KEY")).pipe(Config.map(Option.getOrUndefined)),
  batchSize: positive("PUBLISH_BATCH_SIZE", 500),
  linger: Config.integer("PUBLISH_LINGER_MS").pipe(
    Config.validate({ message: "PUBLISH_LINGER_MS must be 0 or more", validation: (n) => n >= 0 }),
    Config.withDefault(5),
    Config.map(Duration.millis)
  ),
  bufferSize: positive("PUBLISH_BUFFER_EVENTS", 10_000),
  concurrency: positive("PUBLISH_CONCURRENCY", 4),
  timeout: positive("PUBLISH_TIMEOUT_MS", 10_000).pipe(Config.map(Duration.millis)),
  maxRetries: Config.integer("PUBLISH_MAX_RETRIES").pipe(
    Config.validate({ message: "PUBLISH_MAX_RETRIES must be 0 or more", validation: (n) => n >= 0 }),
    Config.withDefault(10)
  )
})

/** An event's status in `Settled.statuses`. */
export const SettledStatus = { processed: 0, dropped_duplicate: 1, rejected: 2, failed: 3 } as const

/**
 * How the events of one `publishEach` settled, in a few bytes an event: a status code (`SettledStatus`) and
 * the requests it took (at most 255 counted), with an error object only for the events not stored.
 */
export interface Settled {
  readonly statuses: Uint8Array
  readonly attempts: Uint8Array
  /** Why each rejected or failed event was not stored, by index. */
  readonly errors: ReadonlyMap<number, PublishError>
}

/** Event `index` of a `publishEach` as an `Outcome`, the shape `publishAll` gives. */
export const outcomeAt = (settled: Settled, index: number): Outcome => {
  const status = settled.statuses[index]
  if (status === SettledStatus.processed || status === SettledStatus.dropped_duplicate) {
    return Either.right({
      status: status === SettledStatus.processed ? "processed" : "dropped_duplicate",
      attempts: settled.attempts[index]
    })
  }
  return Either.left(settled.errors.get(index)!)
}

/** Callers waiting for a group of events they published together. */
interface Waiter {
  readonly statuses: Uint8Array
  readonly attempts: Uint8Array
  readonly errors: Map<number, PublishError>
  remaining: number
  readonly done: Deferred.Deferred<Settled>
}

/** Events `from`…`to` (exclusive) of one `publishEach` call; each event's outcome goes to its own index. */
interface Part {
  readonly eventAt: (index: number) => EventInput
  readonly from: number
  readonly to: number
  readonly waiter: Waiter
}

const closedMessage = "the publisher is closed"

const settleOne = (waiter: Waiter, index: number, status: number, attempts: number, error?: PublishError) => {
  waiter.statuses[index] = status
  waiter.attempts[index] = Math.min(attempts, 255)
  if (error !== undefined) waiter.errors.set(index, error)
  if (--waiter.remaining === 0) {
    Deferred.unsafeDone(waiter.done, Effect.succeed({ statuses: waiter.statuses, attempts: waiter.attempts, errors: waiter.errors }))
  }
}

/**
 * Two 32-bit hashes (FNV-1a and a multiplicative one) of an event's topic and id: what a batch keeps of each
 * event to check that the answer names it, so that no event object is held while its request is in flight.
 */
const hashId = (topic: string, eventId: string, out: Int32Array, at: number): void => {
  let a = 0x811c9dc5 | 0, b = 0x2545f491 | 0
  const mix = (code: number) => {
    a = Math.imul(a ^ code, 0x01000193)
    b = Math.imul(b + code, 0x5bd1e995) ^ (b >>> 13)
  }
  for (let i = 0; i < topic.length; i++) mix(topic.charCodeAt(i))
  mix(0x10000)
  for (let i = 0; i < eventId.length; i++) mix(eventId.charCodeAt(i))
  out[2 * at] = a
  out[2 * at + 1] = b
}

const namesEvent = (r: BatchItemResult, hashes: Int32Array, at: number, scratch: Int32Array): boolean => {
  if (r.topic === null || r.event_id === null) return false
  hashId(r.topic, r.event_id, scratch, 0)
  return scratch[0] === hashes[2 * at] && scratch[1] === hashes[2 * at + 1]
}

/**
 * What a sender fiber passes to the derived client and gets back from it beside the client's own request state.
 * That state lives as long as the request is in flight, so it outlives young-generation collections and is
 * promoted; once dead it still holds whatever it last pointed at until the next full collection, and all of that
 * survives the young collections meanwhile. So the batch's array is emptied as soon as the request
 * is encoded (its events, made anew for each attempt, die young), and the decoded answer is handed over here by
 * `transformResponse` instead of being returned through the client's request state. Each sender fiber sets its
 * own once.
 */
interface Handover {
  events: Array<EventInput> | undefined
  answer: BatchResult | undefined
}

const currentHandover = FiberRef.unsafeMake<Handover | undefined>(undefined)

const emptyBatch = HttpClient.tapRequest(() =>
  Effect.map(FiberRef.get(currentHandover), (handover) => {
    if (handover?.events !== undefined) {
      handover.events.length = 0
      handover.events = undefined
    }
  })
)

const handAnswerOver = (decoded: Effect.Effect<unknown, unknown>): Effect.Effect<unknown, unknown> =>
  Effect.flatMap(FiberRef.get(currentHandover), (handover) =>
    handover === undefined ? decoded : Effect.map(decoded, (answer) => {
      handover.answer = answer as BatchResult
      return handover
    }))

const make = (options: PublisherOptions) =>
  Effect.gen(function*() {
    const batchSize = options.batchSize ?? 500
    const linger = Duration.decode(options.linger ?? "5 millis")
    const bufferSize = options.bufferSize ?? 10_000
    const concurrency = options.concurrency ?? 4
    const timeout = options.timeout ?? "10 seconds"
    const maxRetries = options.maxRetries ?? 10
    const schedule = retrySchedule(options.backoff ?? defaultBackoff, maxRetries)
    const onAttempt = options.onAttempt

    const given = yield* HttpClient.HttpClient
    const timeoutMs = Duration.toMillis(Duration.decode(timeout))
    // the socket client keeps each attempt's time itself (a timer's limit is 2^31 - 1 ms), set once for each
    // sender fiber; any other is given Effect's timeout on each attempt
    const ownTimeout = SocketHttpClient.honoursTimeout(given) && timeoutMs <= 2_147_483_647
    const limited: <A, E, R>(attempt: Effect.Effect<A, E, R>) => Effect.Effect<A, E | AttemptFailure, R> = ownTimeout
      ? (attempt) => attempt
      : Effect.timeoutFail({ duration: timeout, onTimeout: () => timedOut })
    const base = given.pipe(keepRetryHeaders, emptyBatch)
    const apiKey = options.apiKey
    const http = apiKey === undefined ? base : HttpClient.mapRequest(base, HttpClientRequest.bearerToken(apiKey))
    const client = yield* makeClient(options.url.replace(/\/+$/, ""), { transformResponse: handAnswerOver }).pipe(
      Effect.provideService(HttpClient.HttpClient, http)
    )

    // the sender fibers run in their own scope, closed only after the buffer has drained (below)
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer((exit) => Scope.close(scope, exit))
    const queue = yield* Queue.unbounded<Part>()
    // room in the buffer, in events: taken when published, given back when settled
    const room = yield* Effect.makeSemaphore(bufferSize)
    const gathering = yield* Effect.makeSemaphore(1)
    const unsettled = yield* Ref.make(0)
    const closing = yield* Deferred.make<void>()
    const drained = yield* Deferred.make<void>()

    const settled = (count: number) =>
      Ref.updateAndGet(unsettled, (n) => n - count).pipe(
        Effect.tap(room.release(count)),
        Effect.flatMap((left) =>
          left === 0 ? Effect.flatMap(Deferred.isDone(closing), (closed) => closed ? Deferred.succeed(drained, void 0) : Effect.void) : Effect.void
        )
      )

    /** Sends one batch until it is answered or given up, in the sender fiber of `handover`, and settles its events. */
    const send = (parts: ReadonlyArray<Part>, handover: Handover): Effect.Effect<void> => {
      let size = 0
      for (const part of parts) size += part.to - part.from
      const hashes = new Int32Array(2 * size)
      const scratch = new Int32Array(2)
      /** Event `at` of the batch, made again (only for the errors of events that were not stored). */
      const eventAt = (at: number): EventInput => {
        for (const part of parts) {
          if (at < part.to - part.from) return part.eventAt(part.from + at)
          at -= part.to - part.from
        }
        throw new Error("Publisher: no such event in the batch")
      }
      const settle = (at: number, status: number, error?: PublishError) => {
        for (const part of parts) {
          if (at < part.to - part.from) return settleOne(part.waiter, part.from + at, status, attempts, error)
          at -= part.to - part.from
        }
      }
      let attempts = 0
      let started = 0
      const report = (failure: AttemptFailure | undefined) => {
        if (onAttempt === undefined) return
        const retrying = failure !== undefined && classify(failure) === "retry" && attempts <= maxRetries
        onAttempt({ events: size, attempt: attempts, elapsedMs: performance.now() - started, failure, retrying })
      }
      const attempt = limited(Effect.mapError(
        Effect.suspend(() => {
          if (attempts++ === 0) started = performance.now()
          const events = new Array<EventInput>(size)
          let at = 0
          for (const part of parts) {
            for (let i = part.from; i < part.to; i++, at++) {
              const event = part.eventAt(i)
              events[at] = event
              if (attempts === 1) hashId(event.topic, event.event_id, hashes, at)
            }
          }
          handover.events = events
          // what the client returns is the handover itself (see `handAnswerOver`)
          return Effect.map(client.events.publishBatch({ payload: { events } }), () => {
            const answer = handover.answer!
            handover.answer = undefined
            return answer
          })
        }),
        toAttemptFailure
      )).pipe(
        Effect.tapBoth({
          onFailure: (failure) => Effect.sync(() => report(failure)),
          onSuccess: () => Effect.sync(() => report(undefined))
        })
      )
      const failAll = (message: (event: EventInput) => PublishError) => {
        for (let at = 0; at < size; at++) {
          const error = message(eventAt(at))
          settle(at, error._tag === "EventRejected" ? SettledStatus.rejected : SettledStatus.failed, error)
        }
      }
      const answered = (answer: BatchResult) => {
        // each event's outcome from the answer; an event the answer does not account for failed
        const byIndex = new Array<BatchItemResult | undefined>(size)
        for (const r of answer.results) if (Number.isInteger(r.index) && r.index >= 0 && r.index < size) byIndex[r.index] = r
        for (let at = 0; at < size; at++) {
          const r = byIndex[at]
          if (r === undefined || !namesEvent(r, hashes, at, scratch)) {
            const { event_id, topic } = eventAt(at)
            const message = "the answer did not account for the event"
            settle(at, SettledStatus.failed, new DeliveryFailed({ topic, event_id, message, attempts }))
          } else if (r.status === "rejected") {
            const issues = r.errors ?? []
            const message = issues.length > 0 ? issues.map((e) => e.message).join("; ") : "rejected"
            settle(at, SettledStatus.rejected, new EventRejected({ topic: r.topic!, event_id: r.event_id!, message, issues }))
          } else {
            settle(at, r.status === "processed" ? SettledStatus.processed : SettledStatus.dropped_duplicate)
          }
        }
      }
      // the same events again while the failure is worth repeating (the schedule honours Retry-After)
      const outcome = Effect.matchCause(Effect.retry(attempt, schedule), {
        onSuccess: answered,
        onFailure: (cause) => {
          const failure = Option.getOrUndefined(Cause.failureOption(cause))
          if (failure !== undefined && classify(failure) === "rejected") {
            const message = `the server refused the request: ${describeFailure(failure)}`
            return failAll((e) => new EventRejected({ topic: e.topic, event_id: e.event_id, message, issues: [] }))
          }
          const message = failure === undefined ? "the request died" : describeFailure(failure)
          failAll((e) => new DeliveryFailed({ topic: e.topic, event_id: e.event_id, message, attempts }))
        }
      })
      return Effect.zipRight(outcome, Effect.suspend(() => settled(size)))
    }

    // what is left of a part that did not fit into the last batch; only the fiber gathering touches it
    let carry: Part | undefined
    const add = (batch: Array<Part>, count: number, part: Part): number => {
      const fits = batchSize - count
      if (part.to - part.from <= fits) {
        batch.push(part)
        return count + part.to - part.from
      }
      batch.push({ ...part, to: part.from + fits })
      carry = { ...part, from: part.from + fits }
      return batchSize
    }
    const fill = (batch: Array<Part>, count: number): Effect.Effect<number> =>
      count >= batchSize
        ? Effect.succeed(count)
        : Effect.flatMap(Queue.poll(queue), (next) => Option.isNone(next) ? Effect.succeed(count) : fill(batch, add(batch, count, next.value)))

    // the next batch: what is waiting, up to batchSize; when that is less, whatever comes within `linger`
    const gather = gathering.withPermits(1)(Effect.gen(function*() {
      const batch: Array<Part> = []
      const first = carry ?? (yield* Queue.take(queue))
      carry = undefined
      let count = yield* fill(batch, add(batch, 0, first))
      if (count < batchSize && Duration.toMillis(linger) > 0 && !(yield* Deferred.isDone(closing))) {
        yield* Effect.raceFirst(Effect.sleep(linger), Deferred.await(closing))
        count = yield* fill(batch, count)
      }
      return batch
    }))

    // one fiber for each request in flight, for the publisher's life: it gathers the next batch (one fiber at a
    // time) and sends it; a batch that dies (a bug) does not take its sender with it
    const sender = Effect.suspend(() => {
      const handover: Handover = { events: undefined, answer: undefined }
      const loop = Effect.forever(Effect.flatMap(gather, (batch) =>
        Effect.catchAllDefect(send(batch, handover), (defect) => Effect.logError("Publisher: sending a batch died", defect))))
      const own = Effect.locally(loop, currentHandover, handover)
      return ownTimeout ? Effect.locally(own, SocketHttpClient.currentTimeoutMs, timeoutMs) : own
    }).pipe(Effect.locally(HttpClient.currentTracerPropagation, false))
    for (let i = 0; i < concurrency; i++) yield* Effect.forkIn(sender, scope)

    // on close: take no more, and wait until everything taken is stored or has failed
    yield* Effect.addFinalizer(() =>
      Deferred.succeed(closing, void 0).pipe(
        Effect.zipRight(Ref.get(unsettled)),
        Effect.flatMap((n) => n === 0 ? Effect.void : Deferred.await(drained))
      )
    )

    const publishEach = (count: number, eventAt: (index: number) => EventInput): Effect.Effect<Settled> =>
      Effect.gen(function*() {
        const waiter: Waiter = {
          statuses: new Uint8Array(count),
          attempts: new Uint8Array(count),
          errors: new Map(),
          remaining: count,
          done: yield* Deferred.make<Settled>()
        }
        if (count === 0) return { statuses: waiter.statuses, attempts: waiter.attempts, errors: waiter.errors }
        // in parts of at most bufferSize events, so that room for each can be had
        for (let start = 0; start < count; start += bufferSize) {
          const part: Part = { eventAt, from: start, to: Math.min(count, start + bufferSize), waiter }
          const size = part.to - part.from
          const accepted = yield* Effect.uninterruptibleMask((restore) =>
            restore(room.take(size)).pipe(
              Effect.zipRight(Deferred.isDone(closing)),
              Effect.tap((closed) =>
                closed
                  ? room.release(size)
                  : Ref.update(unsettled, (n) => n + size).pipe(Effect.zipRight(Queue.offer(queue, part)))
              ),
              Effect.map((closed) => !closed)
            )
          )
          if (!accepted) {
            for (let i = start; i < count; i++) {
              const { event_id, topic } = eventAt(i)
              settleOne(waiter, i, SettledStatus.failed, 0, new DeliveryFailed({ topic, event_id, message: closedMessage, attempts: 0 }))
            }
            break
          }
        }
        return yield* Deferred.await(waiter.done)
      })

    return {
      /** Completes when the event is stored (201 or 200 duplicate); fails if the server refused it or delivery gave up. */
      publish: (event: EventInput): Effect.Effect<Delivered, PublishError> =>
        Effect.flatMap(publishEach(1, () => event), (settled) => outcomeAt(settled, 0)),
      /** Each event's outcome, in order; completes when every one of them is settled. */
      publishAll: (events: ReadonlyArray<EventInput>): Effect.Effect<ReadonlyArray<Outcome>> =>
        Effect.map(
          publishEach(events.length, (i) => events[i]),
          (settled) => Array.from({ length: events.length }, (_, i) => outcomeAt(settled, i))
        ),
      /**
       * `count` events, event `i` made by `eventAt(i)` when its batch is encoded — again for each retry, so it
       * must give the same event every time. Nothing of an event is held while its request is in flight, which
       * keeps a publisher of millions of events cheap; the outcomes come back compactly (`Settled`, `outcomeAt`).
       */
      publishEach
    } as const
  })

/**
 * Publishes events to an aggregator in batches: `publish` completes when its event is durably stored.
 * Batches are gathered by count and a short time window, retried with the same events (so the same ids)
 * after connection errors, timeouts, 429 and 503 (honouring `Retry-After`), and the buffer is bounded:
 * `publish` waits for room. Closing its scope sends what is buffered first.
 */
export class Publisher extends Effect.Service<Publisher>()("Client/Publisher", {
  scoped: make,
  dependencies: [SocketHttpClient.layer]
}) {
  /** Configured from AGGREGATOR_URL, API_KEY and PUBLISH_* (see `publisherConfig`). */
  static readonly fromConfig = Layer.unwrapEffect(Effect.map(publisherConfig, (options) => Publisher.Default(options)))
}
