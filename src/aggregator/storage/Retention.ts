import type * as SqlClient from "@effect/sql/SqlClient"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import type { RetentionStats } from "../../domain/Event.js"
import { AggregatorConfig } from "../Config.js"
import { Database } from "./Database.js"
import * as Metrics from "../ops/Metrics.js"
import { EventStore } from "./EventStore.js"

/** Expired events one statement deleted, per topic. */
export interface Deleted {
  readonly topic: string
  readonly n: number
}

/**
 * Deletes up to `rows` expired events, the oldest first, and says how many of each topic went (the caller
 * takes them off the totals in the same transaction). It looks only at the `rows` oldest events by `seq` (an
 * index walk, never a scan of the table): `received_at` is the inserting transaction's start, which follows
 * `seq` up to the length of one transaction, so an expired row behind a live one waits at most that long.
 */
export const deleteExpired = (sql: SqlClient.SqlClient, windowSeconds: number, rows: number) =>
  sql<Deleted>`
    WITH oldest AS (
      SELECT seq, received_at FROM events ORDER BY seq LIMIT ${rows}
    ), del AS (
      DELETE FROM events
      WHERE seq IN (SELECT seq FROM oldest WHERE received_at < now() - make_interval(secs => ${windowSeconds}::float8))
      RETURNING topic
    )
    SELECT topic, count(*)::int AS n FROM del GROUP BY topic`

const clamp = (d: Duration.Duration, min: Duration.DurationInput, max: Duration.DurationInput) =>
  Duration.max(Duration.decode(min), Duration.min(d, Duration.decode(max)))

/**
 * With RETENTION set, a background fiber deletes events received longer ago than that, every
 * RETENTION_INTERVAL, in statements of at most RETENTION_BATCH_ROWS rows until none is left; counted in
 * `/stats` and in `aggregator_retention_deleted_total`. A key can be stored again once its event is deleted:
 * deduplication holds for as long as an event is retained.
 */
export class Retention extends Effect.Service<Retention>()("Aggregator/Retention", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const db = yield* Database
    const store = yield* EventStore
    const deleted = yield* Ref.make(0)
    yield* Metrics.register(Metrics.retentionDeleted)
    const window = config.retention
    const windowSeconds = Option.map(window, Duration.toSeconds)

    if (Option.isSome(window) && Option.isSome(windowSeconds)) {
      const interval = Option.getOrElse(config.retentionInterval, () =>
        clamp(Duration.unsafeDivide(window.value, 4), "1 second", "1 minute"))
      const batch = Effect.gen(function*() {
        const sql = yield* db.awaitConnected
        // the delete and the totals it changes (the row count, the topics' counts) commit together
        const perTopic = yield* sql.withTransaction(
          Effect.tap(
            deleteExpired(sql, windowSeconds.value, config.retentionBatchRows),
            (gone) => store.forgetDeleted(gone.map(({ n, topic }) => ({ topic, count: n })))
          )
        )
        const n = perTopic.reduce((sum, t) => sum + t.n, 0)
        if (n > 0) {
          yield* Ref.update(deleted, (total) => total + n)
          Metrics.retentionDeleted.unsafeUpdate(n, [])
        }
        return n
      })
      // whole batches until fewer expired rows are left than a batch holds
      const sweep = batch.pipe(
        Effect.repeat({ while: (n) => n === config.retentionBatchRows }),
        Effect.catchAllCause((cause) =>
          Effect.logWarning("retention: deleting expired events failed; trying again later").pipe(
            Effect.annotateLogs("reason", Cause.pretty(cause).split("\n")[0])
          )
        ),
        Effect.withSpan("Retention.sweep")
      )
      yield* sweep.pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped)
    }

    return {
      stats: Effect.map(Ref.get(deleted), (n): RetentionStats => ({
        window_seconds: Option.getOrNull(windowSeconds),
        deleted: n
      }))
    } as const
  }),
  dependencies: [EventStore.Default]
}) {}
