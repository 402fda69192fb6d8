import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { Redis } from "ioredis"
import { randomUUID } from "node:crypto"
import { type ClusterStats, ReplicaCounters, type UptimeStats } from "../../domain/Event.js"
import { attempt, escapeGlob } from "./Transport.js"

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

/** Every key matching `pattern`, SCAN page by page; none when Redis does not answer. */
const scanAll = (redis: Redis, pattern: string) =>
  Stream.paginateChunkEffect("0", (cursor) =>
    Effect.map(
      Effect.flatMap(attempt(() => redis.scan(cursor, "MATCH", pattern, "COUNT", 1000)), Option.match({
        onNone: () => Effect.fail("unanswered" as const),
        onSome: Effect.succeed
      })),
      ([next, found]) => [Chunk.fromIterable(found), next === "0" ? Option.none() : Option.some(next)] as const
    )).pipe(Stream.runCollect, Effect.map(Chunk.toReadonlyArray), Effect.option)

/**
 * The cluster-wide counters. With Redis, this replica writes its counters under its own key (expiring
 * after CLUSTER_STATS_TTL_MS, rewritten every CLUSTER_STATS_INTERVAL_MS) and reads the other live
 * replicas' keys; it removes its key on shutdown rather than leave it to expire. Without Redis (or while
 * Redis does not answer) the cluster is this replica alone.
 */
export const replicateCounters = (
  redis: Option.Option<Redis>,
  options: { readonly prefix: string; readonly intervalMs: number; readonly ttlMs: number },
  counters: Effect.Effect<ReplicaCounters>
): Effect.Effect<Effect.Effect<ClusterStats>, never, Scope.Scope> =>
  Option.match(redis, {
    onNone: () => Effect.succeed(Effect.map(counters, (own) => sumCounters(own, []))),
    onSome: (redis) =>
      Effect.gen(function*() {
        const replicaKey = `${options.prefix}stats:replica:${randomUUID()}`
        // finalizers run in reverse: the reporter stops before the key is removed
        yield* Effect.addFinalizer(() => attempt(() => redis.del(replicaKey)))
        yield* counters.pipe(
          Effect.flatMap((own) => attempt(() => redis.set(replicaKey, JSON.stringify(own), "PX", options.ttlMs))),
          Effect.repeat(Schedule.spaced(Duration.millis(options.intervalMs))),
          Effect.forkScoped
        )

        const others = Effect.gen(function*() {
          const keys = yield* scanAll(redis, `${escapeGlob(options.prefix)}stats:replica:*`)
          if (Option.isNone(keys)) return []
          const theirs = keys.value.filter((k) => k !== replicaKey)
          if (theirs.length === 0) return []
          const values = yield* attempt(() => redis.mget(...theirs))
          return Option.match(values, {
            onNone: () => [],
            onSome: (vs) => vs.flatMap((v) => v === null ? [] : Option.toArray(decodeCounters(v)))
          })
        })
        return Effect.map(Effect.all([counters, others]), ([own, theirs]) => sumCounters(own, theirs))
      })
  })
