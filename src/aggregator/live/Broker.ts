import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import type { Announcements, ReplicaCounters, StoredEvent } from "../../domain/Event.js"
import { replicateCounters } from "./ClusterStats.js"
import { AggregatorConfig } from "../Config.js"
import * as Metrics from "../ops/Metrics.js"
import { Counters } from "../ingest/Counters.js"
import { StreamHub } from "./StreamHub.js"
import { inProcess, overRedis } from "./Transport.js"

const PUBLISH_BATCH = 1000

interface Buffered {
  batches: Array<ReadonlyArray<StoredEvent>>
  events: number
  /** resumes the sender parked until something is announced */
  wake: (() => void) | undefined
}

/** The batches joined into runs of at most `max` events, in order (one batch that fits goes as it is). */
export const inSends = <A>(batches: ReadonlyArray<ReadonlyArray<A>>, max: number): Array<ReadonlyArray<A>> => {
  if (batches.length === 1 && batches[0].length > 0 && batches[0].length <= max) return [batches[0]]
  const out: Array<ReadonlyArray<A>> = []
  let run: Array<A> = []
  for (const batch of batches) {
    for (const item of batch) {
      run.push(item)
      if (run.length === max) {
        out.push(run)
        run = []
      }
    }
  }
  if (run.length > 0) out.push(run)
  return out
}

/**
 * Announces every newly stored event and hands what is heard to the live-tail clients (StreamHub). With
 * `REDIS_URL` events go through Redis (Transport), so a client on one replica sees what any replica stored,
 * and each replica shares its counters for the cluster-wide stats (ClusterStats); without it everything
 * stays in this process. Announcing never waits: events go to a bounded buffer that a background fiber
 * sends on, and what cannot be sent is counted and dropped.
 */
export class Broker extends Effect.Service<Broker>()("Aggregator/Broker", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const stats = yield* Counters
    const hub = yield* StreamHub
    // Announced batches not yet sent, at most ANNOUNCE_BUFFER_EVENTS events in all. Whole commits go in and
    // out (no per-event queue work); touched only synchronously, so a plain record is enough.
    const buffer: Buffered = { batches: [], events: 0, wake: undefined }
    const takeBuffered = (): Array<ReadonlyArray<StoredEvent>> => {
      const batches = buffer.batches
      buffer.batches = []
      buffer.events = 0
      return batches
    }
    const nextBatches = Effect.async<Array<ReadonlyArray<StoredEvent>>>((resume) => {
      if (buffer.batches.length > 0) return resume(Effect.succeed(takeBuffered()))
      buffer.wake = () => {
        buffer.wake = undefined
        resume(Effect.succeed(takeBuffered()))
      }
      return Effect.sync(() => {
        buffer.wake = undefined
      })
    })
    const counts = yield* Ref.make<Announcements>({ published: 0, failed: 0 })
    yield* Metrics.register(Metrics.announcedOk, Metrics.announcedFailed)

    const transport = yield* Option.match(config.redisUrl, {
      onNone: () => Effect.succeed(inProcess(hub.deliver)),
      onSome: (url) => overRedis(Redacted.value(url), config.redisPrefix, hub.deliver)
    })

    const count = (published: number, failed: number) =>
      Effect.zipRight(
        Ref.update(counts, (c) => ({ published: c.published + published, failed: c.failed + failed })),
        Effect.sync(() => {
          if (published > 0) Metrics.announcedOk.unsafeUpdate(published, [])
          if (failed > 0) Metrics.announcedFailed.unsafeUpdate(failed, [])
        })
      )

    const send = (events: ReadonlyArray<StoredEvent>) =>
      Effect.flatMap(transport.publish(events), (lost) => count(events.length - lost, lost))

    // in sends of at most PUBLISH_BATCH events
    const sendAll = (batches: ReadonlyArray<ReadonlyArray<StoredEvent>>) =>
      Effect.forEach(inSends(batches, PUBLISH_BATCH), send, { discard: true })

    yield* nextBatches.pipe(
      Effect.flatMap(sendAll),
      Effect.forever,
      Effect.forkScoped
    )

    const announcements = Ref.get(counts)
    const counters = Effect.map(
      Effect.all([stats.snapshot, stats.storageFailures, announcements]),
      ([uptime_stats, storage_failures, announcements]): ReplicaCounters => ({ uptime_stats, storage_failures, announcements })
    )
    const cluster = yield* replicateCounters(
      transport.commands,
      { prefix: config.redisPrefix, intervalMs: config.clusterStatsIntervalMs, ttlMs: config.clusterStatsTtlMs },
      counters
    )

    // Runs first on shutdown (finalizers run in reverse): send what is buffered.
    yield* Effect.addFinalizer(() => Effect.suspend(() => sendAll(takeBuffered())))

    /** Queues the events for announcement; never waits and never fails. */
    const announce = (events: ReadonlyArray<StoredEvent>) =>
      Effect.suspend(() => {
        const room = config.announceBufferEvents - buffer.events
        const taken = events.length <= room ? events : room > 0 ? events.slice(0, room) : []
        if (taken.length > 0) {
          buffer.batches.push(taken)
          buffer.events += taken.length
          buffer.wake?.()
        }
        const dropped = events.length - taken.length
        return dropped > 0 ? count(0, dropped) : Effect.void
      })

    return {
      announce,
      /** A live-tail client's response body (see StreamHub); past STREAM_MAX_CLIENTS it fails with Overloaded. */
      subscribe: hub.subscribe,
      announcements,
      streamClients: hub.clients,
      /** This replica's counters summed with every live replica's; this one alone when they cannot be read. */
      cluster
    } as const
  }),
  dependencies: [Counters.Default, StreamHub.Default]
}) {}
