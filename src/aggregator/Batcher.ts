import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import { Overloaded, StorageUnavailable } from "../domain/Errors.js"
import { AggregatorConfig } from "./Config.js"
import type { StoredEvent } from "../domain/Event.js"
import { Broker } from "./Broker.js"
import * as Metrics from "./Metrics.js"
import { eventKey, type NewEvent, EventStore } from "./EventStore.js"

/** Resumes after the event loop's next poll phase: an immediate queued from the check phase runs one loop later. */
const nextIoTurn = Effect.async<void>((resume) => {
  let handle = setImmediate(() => {
    handle = setImmediate(() => resume(Effect.void))
  })
  return Effect.sync(() => clearImmediate(handle))
})

interface Pending {
  readonly events: ReadonlyArray<NewEvent>
  readonly done: Deferred.Deferred<ReadonlyArray<boolean>, StorageUnavailable>
}

/**
 * Group commit. Concurrent submissions are gathered into one multi-row insert and one transaction; each
 * submitter is answered only after that transaction commits (or every member gets the failure). While
 * `flushConcurrency` flushes are in flight, new submissions queue and form the next batch, so gathering
 * overlaps committing. Events waiting or being written are capped: past the cap a submission fails at once
 * with `Overloaded` (429) instead of growing the heap. With `groupCommit` off every submission is its own
 * transaction (for comparison). Once a transaction commits, the events it stored (never a duplicate) are
 * announced on the broker.
 */
export class Batcher extends Effect.Service<Batcher>()("Aggregator/Batcher", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const broker = yield* Broker
    const scope = yield* Effect.scope
    const queue = yield* Queue.unbounded<Pending>()
    const cap = config.flushMaxEvents
    const slots = yield* Effect.makeSemaphore(config.groupCommit ? config.flushConcurrency : config.dbPoolSize)
    let pending = 0
    yield* Metrics.register(Metrics.batchSize, Metrics.commitDuration)
    let carry: Array<Pending> = []
    let closing = false

    // Items that did not fit the previous flush go first, in arrival order.
    const gather = Effect.gen(function*() {
      const first = carry.length > 0 ? carry.shift()! : yield* Queue.take(queue)
      const batch = [first]
      let size = first.events.length
      if (!config.groupCommit) return batch
      // PGlite answers without waiting for I/O, so the writer would take each request alone before the others
      // that arrived meanwhile are even read: let the event loop poll the sockets once first.
      if (config.embedded && size < cap) yield* nextIoTurn
      if (config.flushWindowMs > 0 && size < cap) yield* Effect.sleep(config.flushWindowMs)
      while (carry.length > 0 && size + carry[0].events.length <= cap) {
        const p = carry.shift()!
        batch.push(p)
        size += p.events.length
      }
      while (carry.length === 0 && size < cap) {
        const more = yield* Queue.takeUpTo(queue, cap - size)
        if (more.length === 0) break
        for (const p of more) {
          if (carry.length === 0 && size + p.events.length <= cap) {
            batch.push(p)
            size += p.events.length
          } else {
            carry.push(p)
          }
        }
      }
      return batch
    })

    const flush = (batch: ReadonlyArray<Pending>) => {
      const events = batch.length === 1 ? batch[0].events : batch.flatMap((p) => p.events)
      let committed: ReadonlyArray<StoredEvent> = []
      const started = performance.now()
      return store.insertMany(events, (rows) => {
        committed = rows
      }, cap).pipe(
        Effect.exit,
        Effect.tap(() =>
          Effect.sync(() => {
            Metrics.batchSize.unsafeUpdate(events.length, [])
            Metrics.commitDuration.unsafeUpdate((performance.now() - started) / 1000, [])
          })
        ),
        Effect.flatMap((exit) => {
          if (Exit.isSuccess(exit)) {
            const isNew = new Set<string>()
            exit.value.forEach((stored, i) => {
              if (stored) isNew.add(eventKey(events[i].topic, events[i].event_id))
            })
            let offset = 0
            return broker.announce(committed.filter((e) => isNew.delete(eventKey(e.topic, e.event_id)))).pipe(
              Effect.zipRight(Effect.forEach(batch, (p) => {
              const mine = exit.value.slice(offset, offset + p.events.length)
              offset += p.events.length
              return Deferred.succeed(p.done, mine)
            }, { discard: true }))
            )
          }
          const failure = new StorageUnavailable({ message: "the write did not commit; retry later" })
          // A storage error was logged where it happened; anything else is a bug and must be seen.
          const logged = Cause.isFailType(exit.cause) && exit.cause.error._tag === "StorageUnavailable"
          return Effect.forEach(batch, (p) => Deferred.fail(p.done, failure), { discard: true }).pipe(
            Effect.zipRight(logged ? Effect.void : Effect.logError("flush failed", exit.cause))
          )
        }),
        Effect.ensuring(Effect.sync(() => {
          pending -= events.length
        })),
        Effect.ensuring(slots.release(1)),
        Effect.uninterruptible
      )
    }

    yield* slots.take(1).pipe(
      Effect.zipRight(gather),
      Effect.flatMap((batch) => Effect.forkIn(flush(batch), scope)),
      Effect.forever,
      Effect.forkScoped
    )

    // Runs after the HTTP server has drained; whatever is still queued is refused, never left hanging.
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        closing = true
        const left = [...carry, ...(yield* Queue.takeAll(queue))]
        const refused = new StorageUnavailable({ message: "the aggregator is shutting down; retry" })
        yield* Effect.forEach(left, (p) => Deferred.fail(p.done, refused), { discard: true })
      })
    )

    /**
     * Stores the events (in gathered transactions) and tells, per position, whether this call stored it.
     * Callers dedupe their own input first; across submissions the earlier one in the queue wins. A
     * submission is never split across transactions: one larger than `flushMaxEvents` is a flush of its
     * own, written in statements of at most that many rows, so it is stored whole or not at all.
     */
    const submit = (events: ReadonlyArray<NewEvent>) =>
      Effect.suspend((): Effect.Effect<ReadonlyArray<boolean>, Overloaded | StorageUnavailable> => {
        if (events.length === 0) return Effect.succeed([])
        if (closing) return Effect.fail(new StorageUnavailable({ message: "the aggregator is shutting down; retry" }))
        // A submission larger than the whole cap is admitted when nothing else waits, so it is never refused forever.
        if (pending > 0 && pending + events.length > config.maxPendingEvents) {
          return Effect.fail(new Overloaded({ message: "too many events are waiting to be written; retry later" }))
        }
        pending += events.length
        return Effect.flatMap(Deferred.make<ReadonlyArray<boolean>, StorageUnavailable>(), (done) =>
          Queue.offer(queue, { events, done }).pipe(Effect.zipRight(Deferred.await(done))))
      })

    return {
      submit,
      pendingEvents: Effect.sync(() => pending)
    } as const
  }),
  dependencies: [Broker.Default]
}) {}
