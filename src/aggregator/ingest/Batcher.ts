import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import type { StoredEvent } from "../../domain/Event.js"
import { Overloaded, StorageUnavailable } from "../../domain/Errors.js"
import { Broker } from "../live/Broker.js"
import { AggregatorConfig } from "../Config.js"
import { EventStore, type Inserted, type NewEvent } from "../storage/EventStore.js"
import * as Metrics from "../ops/Metrics.js"

/** Resumes after the event loop's next poll phase: an immediate queued from the check phase runs one loop later. */
const nextIoTurn = Effect.async<void>((resume) => {
  let handle = setImmediate(() => {
    handle = setImmediate(() => resume(Effect.void))
  })
  return Effect.sync(() => clearImmediate(handle))
})

/** How a submission ends: the rows it stored, or why nothing was (an Either is also an Effect). */
export type Written = Either.Either<Inserted, Overloaded | StorageUnavailable>

interface Pending {
  readonly events: ReadonlyArray<NewEvent>
  readonly answer: (outcome: Written) => void
}

/** What the group commit holds between submissions and flushes. */
interface Gathering {
  /** submissions in arrival order, not yet in a flush */
  waiting: Array<Pending>
  waitingEvents: number
  /** flushes started and not yet settled */
  inFlight: number
  /** events waiting or being written: what MAX_PENDING_EVENTS caps */
  pending: number
  closing: boolean
  /** resumes the writer fiber parked until a flush is due */
  wake: (() => void) | undefined
  /** events in the flush taken last */
  lastFlushEvents: number
}

/**
 * Group commit. Concurrent submissions are gathered into one multi-row insert and one transaction; each
 * submitter is answered only after that transaction commits (or every member gets the failure). While a flush
 * is in flight, new submissions wait and form the next batch, so gathering overlaps committing; once
 * FLUSH_OVERLAP_EVENTS wait, that batch is flushed beside it (at most `flushConcurrency` in flight). Events
 * waiting or being written are capped: past the cap a submission fails at once with `Overloaded` (429) instead
 * of growing the heap. With `groupCommit` off every submission is its own
 * transaction (for comparison). Once a transaction commits, the rows it stored are announced on the broker.
 * Under load (the last flush held at least FLUSH_BUSY_EVENTS events) a flush waits FLUSH_BUSY_WINDOW_MS before
 * taking its batch, so the clients just answered can join it.
 */
export class Batcher extends Effect.Service<Batcher>()("Aggregator/Batcher", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const broker = yield* Broker
    const scope = yield* Effect.scope
    const cap = config.flushMaxEvents
    const slots = yield* Effect.makeSemaphore(config.groupCommit ? config.flushConcurrency : config.dbPoolSize)
    yield* Metrics.register(Metrics.batchSize, Metrics.commitDuration)

    // Submissions in arrival order, not yet in a flush. A flush starts at once when none is in flight; while
    // one is, the next waits (gathering what arrives meanwhile) until it commits or FLUSH_OVERLAP_EVENTS are
    // waiting: so batches grow with the load, and under load commits overlap instead of every client waiting
    // for the commit before its own (each commit's round trips wait on a busy event loop).
    // Touched only synchronously (inside `Effect.sync`/`Effect.async` callbacks), so one plain record is enough.
    const state: Gathering = { waiting: [], waitingEvents: 0, inFlight: 0, pending: 0, closing: false, wake: undefined, lastFlushEvents: 0 }
    const overlapAt = Math.min(config.flushOverlapEvents, cap)
    const ready = () => state.waiting.length > 0 && (state.inFlight === 0 || state.waitingEvents >= overlapAt || !config.groupCommit)
    const poke = () => {
      if (state.wake !== undefined && ready()) {
        const resume = state.wake
        state.wake = undefined
        resume()
      }
    }
    const work = Effect.async<void>((resume) => {
      if (ready()) return resume(Effect.void)
      state.wake = () => resume(Effect.void)
    })

    // The oldest submission always goes; the next ones while they fit under the cap, in arrival order.
    const take = (): ReadonlyArray<Pending> => {
      let n = 1
      let size = state.waiting[0].events.length
      if (config.groupCommit) {
        while (n < state.waiting.length && size + state.waiting[n].events.length <= cap) size += state.waiting[n++].events.length
      }
      const batch = n === state.waiting.length ? state.waiting : state.waiting.slice(0, n)
      state.waiting = n === state.waiting.length ? [] : state.waiting.slice(n)
      state.waitingEvents -= size
      state.lastFlushEvents = size
      state.inFlight++
      return batch
    }

    const flush = (batch: ReadonlyArray<Pending>) => {
      const events = batch.length === 1 ? batch[0].events : batch.flatMap((p) => p.events)
      const started = performance.now()
      return store.insertMany(events, cap).pipe(
        Effect.exit,
        Effect.flatMap((exit) => {
          Metrics.batchSize.unsafeUpdate(events.length, [])
          Metrics.commitDuration.unsafeUpdate((performance.now() - started) / 1000, [])
          if (Exit.isSuccess(exit)) {
            const rows = exit.value
            const fresh: Array<StoredEvent> = []
            for (const row of rows) if (row !== undefined) fresh.push(row)
            let offset = 0
            for (const p of batch) {
              p.answer(Either.right(batch.length === 1 ? rows : rows.slice(offset, offset + p.events.length)))
              offset += p.events.length
            }
            return fresh.length > 0 ? broker.announce(fresh) : Effect.void
          }
          const failure = Either.left(new StorageUnavailable({ message: "the write did not commit; retry later" }))
          for (const p of batch) p.answer(failure)
          // A storage error was logged where it happened; anything else is a bug and must be seen.
          const logged = Cause.isFailType(exit.cause) && exit.cause.error._tag === "StorageUnavailable"
          return logged ? Effect.void : Effect.logError("flush failed", exit.cause)
        }),
        Effect.ensuring(Effect.sync(() => {
          state.pending -= events.length
          state.inFlight--
          poke()
        })),
        Effect.ensuring(slots.release(1)),
        Effect.uninterruptible
      )
    }

    // PGlite answers without waiting for I/O, so the writer would take each request alone before the others
    // that arrived meanwhile are even read: on the embedded store it lets the event loop poll the sockets once.
    const gathering = config.groupCommit && config.embedded
      ? Effect.suspend(() => state.waitingEvents < cap ? nextIoTurn : Effect.void)
      : Effect.void
    yield* slots.take(1).pipe(
      Effect.zipRight(work),
      Effect.zipRight(gathering),
      Effect.zipRight(Effect.suspend(() => {
        if (!config.groupCommit) return Effect.void
        if (config.flushWindowMs > 0) return Effect.sleep(config.flushWindowMs)
        // busy: the clients the last flush answered are sending again; let them join this one
        return state.lastFlushEvents >= config.flushBusyEvents && config.flushBusyWindowMs > 0 && state.waitingEvents < cap
          ? Effect.sleep(config.flushBusyWindowMs)
          : Effect.void
      })),
      Effect.flatMap(() => Effect.forkIn(flush(take()), scope)),
      Effect.forever,
      Effect.forkScoped
    )

    // Runs after the HTTP server has drained; whatever still waits is refused, never left hanging.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        state.closing = true
        const refused = Either.left(new StorageUnavailable({ message: "the aggregator is shutting down; retry" }))
        for (const p of state.waiting) p.answer(refused)
        state.waiting = []
        state.waitingEvents = 0
      })
    )

    /**
     * Stores the events (in gathered transactions) and calls `answer` once with, per position, the row this
     * call stored, or undefined for a duplicate. Within one flush the earlier submission wins; across flushes in
     * flight together, the one whose transaction writes the key first (the other waits for it). A submission is
     * never split across transactions: one larger than `flushMaxEvents` is a flush of its own, stored whole or
     * not at all. Synchronous, for callers outside a fiber (the ingest front door); `submit` is its Effect.
     */
    const offer = (events: ReadonlyArray<NewEvent>, answer: (outcome: Written) => void): void => {
      if (events.length === 0) return answer(Either.right([]))
      if (state.closing) return answer(Either.left(new StorageUnavailable({ message: "the aggregator is shutting down; retry" })))
      // A submission larger than the whole cap is admitted when nothing else waits, so it is never refused forever.
      if (state.pending > 0 && state.pending + events.length > config.maxPendingEvents) {
        return answer(Either.left(new Overloaded({ message: "too many events are waiting to be written; retry later" })))
      }
      state.pending += events.length
      state.waitingEvents += events.length
      state.waiting.push({ events, answer })
      poke()
    }

    const submit = (events: ReadonlyArray<NewEvent>): Effect.Effect<Inserted, Overloaded | StorageUnavailable> =>
      Effect.async((resume) => offer(events, resume))

    return {
      submit,
      offer,
      pendingEvents: Effect.sync(() => state.pending)
    } as const
  }),
  dependencies: [Broker.Default, EventStore.Default]
}) {}
