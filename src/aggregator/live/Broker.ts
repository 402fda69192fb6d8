import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import type { Announcements, ReplicaCounters, StoredEvent } from "../../domain/Event.js"
import { replicateCounters } from "./ClusterStats.js"
import { AggregatorConfig } from "../Config.js"
import * as Metrics from "../ops/Metrics.js"
import { Counters } from "../ingest/Counters.js"
import { StreamHub, takeGathered } from "./StreamHub.js"
import { inProcess, overRedis } from "./Transport.js"

const PUBLISH_BATCH = 1000

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
    const buffer = yield* Queue.dropping<StoredEvent>(config.announceBufferEvents)
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

    yield* takeGathered(buffer, PUBLISH_BATCH).pipe(
      Effect.flatMap(send),
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
    yield* Effect.addFinalizer(() => Effect.flatMap(Queue.takeAll(buffer), (left) => send(Chunk.toReadonlyArray(left))))

    /** Queues the events for announcement; never waits and never fails. */
    const announce = (events: ReadonlyArray<StoredEvent>) =>
      Effect.suspend(() => {
        let dropped = 0
        for (const e of events) if (!buffer.unsafeOffer(e)) dropped++
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
