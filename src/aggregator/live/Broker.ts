import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { Redis, type RedisOptions } from "ioredis"
import { randomUUID } from "node:crypto"
import {
  type Announcements,
  type ClusterStats,
  ReplicaCounters,
  StoredEvent,
  type UptimeStats
} from "../../domain/Event.js"
import { Overloaded } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import * as Metrics from "../ops/Metrics.js"
import { Stats } from "../ingest/Stats.js"

/** Stored events as one live-tail client gets them: their Server-Sent Events frames, as bytes. */
export interface Piece {
  readonly events: ReadonlyArray<StoredEvent>
  readonly bytes: Uint8Array
}

interface Client {
  readonly topic: string | undefined
  readonly queue: Queue.Queue<Piece>
  /** events offered to the client and not yet taken by its writer */
  pending: number
}

export const sseFrame = (e: StoredEvent) => `id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`

/** One batch of announced events, each encoded at most once, joined per audience on first use. */
class Encoded {
  private frames: Array<string> | undefined
  private readonly pieces = new Map<string | undefined, Piece | undefined>()
  constructor(readonly events: ReadonlyArray<StoredEvent>) {}
  for(topic: string | undefined): Piece | undefined {
    if (this.pieces.has(topic)) return this.pieces.get(topic)
    const frames = (this.frames ??= this.events.map(sseFrame))
    const chosen = topic === undefined ? this.events.map((_, i) => i) : this.events.flatMap((e, i) => e.topic === topic ? [i] : [])
    const piece = chosen.length === 0 ? undefined : {
      events: chosen.map((i) => this.events[i]),
      bytes: Buffer.from(chosen.map((i) => frames[i]).join(""))
    }
    this.pieces.set(topic, piece)
    return piece
  }
}

/** How announcements leave this process and how the other replicas' counters are read. */
interface Transport {
  /** Sends the events; answers how many could not be sent. */
  readonly publish: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<number>
  readonly report: (counters: ReplicaCounters) => Effect.Effect<void>
  /** The live replicas' counters other than this one's, or none when they cannot be read. */
  readonly others: Effect.Effect<Option.Option<ReadonlyArray<ReplicaCounters>>>
  readonly withdraw: Effect.Effect<void>
}

const PUBLISH_BATCH = 1000
const REDIS_TIMEOUT = Duration.seconds(5)

const escapeGlob = (s: string) => s.replace(/[*?[\]\\]/g, "\\$&")
const decodeEvent = Schema.decodeUnknownOption(Schema.parseJson(StoredEvent))
const decodeCounters = Schema.decodeUnknownOption(Schema.parseJson(ReplicaCounters))

const addUptime = (a: UptimeStats, b: UptimeStats): UptimeStats => ({
  received: a.received + b.received,
  unique_processed: a.unique_processed + b.unique_processed,
  duplicate_dropped: a.duplicate_dropped + b.duplicate_dropped,
  rejected: a.rejected + b.rejected
})

export const sumCounters = (own: ReplicaCounters, others: ReadonlyArray<ReplicaCounters>): ClusterStats =>
  others.reduce<ClusterStats>((sum, r) => ({
    uptime_stats: addUptime(sum.uptime_stats, r.uptime_stats),
    storage_failures: sum.storage_failures + r.storage_failures,
    announcements: {
      published: sum.announcements.published + r.announcements.published,
      failed: sum.announcements.failed + r.announcements.failed
    },
    replicas: sum.replicas + 1
  }), { ...own, replicas: 1 })

// Reconnects by itself, backing off up to 2 s; with no offline queue a command fails at once while down.
const retryStrategy = (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000)

const inProcess = (heard: (events: ReadonlyArray<StoredEvent>) => void): Transport => ({
  publish: (events) => Effect.sync(() => {
    heard(events)
    return 0
  }),
  report: () => Effect.void,
  others: Effect.succeed(Option.some([])),
  withdraw: Effect.void
})

const connection = (url: string, name: string, options: RedisOptions) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      const log = Runtime.runFork(runtime)
      const redis = new Redis(url, { connectionName: `log-aggregator-${name}`, retryStrategy, ...options })
      let down = false
      redis.on("ready", () => {
        if (down) log(Effect.logInfo(`redis ${name} connection is back`))
        down = false
      })
      redis.on("error", (e: Error) => {
        if (!down) log(Effect.logWarning(`redis ${name} connection failed; retrying`, e.message))
        down = true
      })
      return redis
    }),
    (redis) =>
      // A release runs uninterruptibly, and a timeout cannot cut an uninterruptible wait: `quit` on a
      // connection that never came up waits forever unless the wait itself is made interruptible.
      Effect.tryPromise(() => redis.quit()).pipe(
        Effect.interruptible,
        Effect.timeout(Duration.seconds(1)),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => redis.disconnect()))
      )
  )

const overRedis = (
  url: string,
  prefix: string,
  ttlMs: number,
  heard: (events: ReadonlyArray<StoredEvent>) => void
): Effect.Effect<Transport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const replicaKey = `${prefix}stats:replica:${randomUUID()}`
    const pub = yield* connection(url, "publisher", { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    // The subscriber queues its PSUBSCRIBE until connected and subscribes again after every reconnect.
    const sub = yield* connection(url, "subscriber", { maxRetriesPerRequest: null })
    // Messages read from one socket read arrive in one go: gather them, so clients get them as one write.
    let arriving: Array<StoredEvent> = []
    sub.on("pmessage", (_pattern: string, _channel: string, message: string) => {
      const event = decodeEvent(message)
      if (Option.isNone(event)) return
      if (arriving.length === 0) {
        setImmediate(() => {
          const events = arriving
          arriving = []
          heard(events)
        })
      }
      arriving.push(event.value)
    })
    yield* Effect.tryPromise(() => sub.psubscribe(`${escapeGlob(prefix)}events:*`)).pipe(
      Effect.timeout(REDIS_TIMEOUT),
      Effect.catchAll((e) => Effect.logWarning("redis subscribe pending; it completes once redis answers", e)),
      Effect.forkScoped
    )

    const attempt = <A>(f: () => Promise<A>) =>
      // interruptible, so the timeout also holds in the shutdown finalizer (which runs uninterruptibly)
      Effect.tryPromise(f).pipe(Effect.interruptible, Effect.timeoutFail({ duration: REDIS_TIMEOUT, onTimeout: () => "timeout" }), Effect.option)

    const publish = (events: ReadonlyArray<StoredEvent>) => {
      if (pub.status !== "ready") return Effect.succeed(events.length)
      return attempt(() => {
        const pipeline = pub.pipeline()
        for (const e of events) pipeline.publish(`${prefix}events:${e.topic}`, JSON.stringify(e))
        return pipeline.exec()
      }).pipe(Effect.map(Option.match({
        onNone: () => events.length,
        onSome: (results) => results === null ? events.length : results.filter(([error]) => error !== null).length
      })))
    }

    const scanAll = (pattern: string) =>
      attempt(async () => {
        const keys: Array<string> = []
        let cursor = "0"
        do {
          const [next, found] = await pub.scan(cursor, "MATCH", pattern, "COUNT", 1000)
          keys.push(...found)
          cursor = next
        } while (cursor !== "0")
        return keys
      })

    const others = Effect.gen(function*() {
      const keys = yield* scanAll(`${escapeGlob(prefix)}stats:replica:*`)
      if (Option.isNone(keys)) return Option.none()
      const theirs = keys.value.filter((k) => k !== replicaKey)
      if (theirs.length === 0) return Option.some([])
      const values = yield* attempt(() => pub.mget(...theirs))
      return Option.map(values, (vs) => vs.flatMap((v) => v === null ? [] : Option.toArray(decodeCounters(v))))
    })

    return {
      publish,
      report: (counters) => Effect.asVoid(attempt(() => pub.set(replicaKey, JSON.stringify(counters), "PX", ttlMs))),
      others,
      withdraw: Effect.asVoid(attempt(() => pub.del(replicaKey)))
    } satisfies Transport
  })

/**
 * Announces every newly stored event and fans announcements out to live-tail clients. With `REDIS_URL`
 * events go through Redis (one channel a topic, one subscriber connection a process), so a client on one
 * replica sees what any replica stored, and each replica shares its counters for the cluster-wide stats;
 * without it everything stays in this process. Announcing never waits: events go to a bounded buffer that
 * a background fiber sends on, and what cannot be sent is counted and dropped.
 */
export class Broker extends Effect.Service<Broker>()("Aggregator/Broker", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const stats = yield* Stats
    const clients = new Set<Client>()
    // What the transport hears, in order, for the one fiber that fans it out to the clients.
    const heardQueue = yield* Queue.unbounded<ReadonlyArray<StoredEvent>>()
    const heard = (events: ReadonlyArray<StoredEvent>) => {
      if (clients.size > 0 && events.length > 0) heardQueue.unsafeOffer(events)
    }
    const buffer = yield* Queue.dropping<StoredEvent>(config.announceBufferEvents)
    let published = 0
    let failed = 0
    yield* Metrics.register(Metrics.announcedOk, Metrics.announcedFailed)

    const transport = yield* Option.match(config.redisUrl, {
      onNone: () => Effect.succeed(inProcess(heard)),
      onSome: (url) => overRedis(Redacted.value(url), config.redisPrefix, config.clusterStatsTtlMs, heard)
    })

    const send = (events: ReadonlyArray<StoredEvent>) =>
      Effect.map(transport.publish(events), (lost) => {
        published += events.length - lost
        failed += lost
        Metrics.announcedOk.unsafeUpdate(events.length - lost, [])
        if (lost > 0) Metrics.announcedFailed.unsafeUpdate(lost, [])
      })

    yield* Queue.takeBetween(buffer, 1, PUBLISH_BATCH).pipe(
      Effect.flatMap((chunk) => send(Chunk.toReadonlyArray(chunk))),
      Effect.forever,
      Effect.forkScoped
    )

    const announcements = Effect.sync((): Announcements => ({ published, failed }))
    const counters = Effect.map(
      Effect.all([stats.snapshot, stats.storageFailures, announcements]),
      ([uptime_stats, storage_failures, announcements]): ReplicaCounters => ({ uptime_stats, storage_failures, announcements })
    )

    const reporter = yield* counters.pipe(
      Effect.flatMap(transport.report),
      Effect.repeat(Schedule.spaced(Duration.millis(config.clusterStatsIntervalMs))),
      Effect.forkScoped
    )

    // Runs first on shutdown (finalizers run in reverse): send what is buffered, then leave the cluster
    // at once rather than after the TTL.
    yield* Effect.addFinalizer(() =>
      Queue.takeAll(buffer).pipe(
        Effect.flatMap((left) => send(Chunk.toReadonlyArray(left))),
        Effect.zipRight(Fiber.interrupt(reporter)),
        Effect.zipRight(transport.withdraw)
      )
    )

    /** Queues the events for announcement; never waits and never fails. */
    const announce = (events: ReadonlyArray<StoredEvent>) =>
      Effect.sync(() => {
        let dropped = 0
        for (const e of events) if (!buffer.unsafeOffer(e)) dropped++
        if (dropped > 0) {
          failed += dropped
          Metrics.announcedFailed.unsafeUpdate(dropped, [])
        }
      })

    // Each batch is encoded once for every client: all of it joined for clients of every topic, and
    // once a topic for clients of that topic. A client that would fall more than
    // `streamClientBufferEvents` behind is dropped (its queue shuts down, which ends its stream; whoever
    // serves it must then let it go even if stuck writing to it).
    const fanOut = (events: ReadonlyArray<StoredEvent>) =>
      Effect.suspend(() => {
        const batch = new Encoded(events)
        const dropped: Array<Client> = []
        for (const client of clients) {
          const piece = batch.for(client.topic)
          if (piece === undefined) continue
          if (client.pending + piece.events.length > config.streamClientBufferEvents) {
            dropped.push(client)
            continue
          }
          client.pending += piece.events.length
          client.queue.unsafeOffer(piece)
        }
        for (const client of dropped) clients.delete(client)
        return Effect.forEach(dropped, (client) => Queue.shutdown(client.queue), { discard: true })
      })

    yield* Queue.takeBetween(heardQueue, 1, Number.MAX_SAFE_INTEGER).pipe(
      Effect.flatMap((batches) => fanOut(Chunk.toReadonlyArray(batches).flat())),
      Effect.forever,
      Effect.forkScoped
    )

    /**
     * The events announced from now on (one topic or all), for one live-tail client: `frames` is their
     * Server-Sent Events text, ending when the client is dropped for falling behind. Past
     * STREAM_MAX_CLIENTS it fails with Overloaded.
     */
    const subscribe = (topic: string | undefined) =>
      Effect.gen(function*() {
        if (clients.size >= config.streamMaxClients) {
          return yield* new Overloaded({
            message: `this replica serves at most ${config.streamMaxClients} live-tail clients; retry later`
          })
        }
        const queue = yield* Effect.acquireRelease(Queue.unbounded<Piece>(), Queue.shutdown)
        const client: Client = { topic, queue, pending: 0 }
        yield* Effect.acquireRelease(Effect.sync(() => clients.add(client)), () => Effect.sync(() => clients.delete(client)))
        return {
          queue: queue as Queue.Dequeue<Piece>,
          frames: Stream.fromQueue(queue).pipe(Stream.map((piece) => {
            client.pending -= piece.events.length
            return piece.bytes
          }))
        }
      })

    return {
      announce,
      subscribe,
      announcements,
      streamClients: Effect.sync(() => clients.size),
      /** This replica's counters summed with every live replica's; this one alone when they cannot be read. */
      cluster: Effect.gen(function*() {
        const own = yield* counters
        const others = yield* transport.others
        return sumCounters(own, Option.getOrElse(others, () => []))
      })
    } as const
  }),
  dependencies: [Stats.Default]
}) {}
