import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Pg from "pg"
import { NotReady, StorageUnavailable } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import { runMigrations } from "./Migrations.js"
import { DbPool, type PoolUsage } from "./Pool.js"

const describe = (e: unknown): string => {
  if (e instanceof Error || (typeof e === "object" && e !== null && "message" in e)) {
    const cause = (e as { cause?: unknown }).cause
    const own = String((e as { message: unknown }).message)
    return cause instanceof Error && cause.message !== own ? `${own}: ${cause.message}` : own
  }
  return String(e)
}

/**
 * `@effect/sql-pg` on a `pg` pool of our own making, so the pool's use can be read for the metrics. The
 * options are those `PgClient.layer` would pass; the first connection is tried before the client exists.
 */
const pgLayer = (url: string, maxConnections: number): Layer.Layer<SqlClient.SqlClient | DbPool, SqlError> =>
  Layer.unwrapScoped(
    Effect.map(
      Effect.acquireRelease(
        Effect.sync(() => {
          const pool = new Pg.Pool({
            connectionString: url,
            max: maxConnections,
            connectionTimeoutMillis: 5_000,
            application_name: "log-aggregator"
          })
          pool.on("error", () => {})
          return pool
        }).pipe(
          // the first connection is tried here; a pool that never connected is closed before the next attempt
          Effect.tap((pool) =>
            Effect.tryPromise({
              try: () => pool.query("SELECT 1"),
              catch: (cause) => new SqlError({ cause, message: "PgClient: Failed to connect" })
            }).pipe(Effect.tapError(() => Effect.promise(() => pool.end().catch(() => {}))))
          )
        ),
        (pool) => Effect.promise(() => pool.end()).pipe(Effect.interruptible, Effect.timeoutOption(1000))
      ),
      (pool) =>
        Layer.merge(
          PgClient.layerFromPool({ acquire: Effect.succeed(pool) }),
          Layer.succeed(DbPool, {
            usage: () => ({
              max: maxConnections,
              inUse: pool.totalCount - pool.idleCount,
              idle: pool.idleCount,
              waiting: pool.waitingCount
            })
          })
        )
    )
  )

/**
 * The SqlClient, connected and migrated in the background so the process serves `/` at once and
 * `/ready` says 503 until the database answers. Connection attempts back off exponentially with
 * jitter, each wait capped; every failed attempt is logged.
 */
export class Database extends Effect.Service<Database>()("Aggregator/Database", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const scope = yield* Effect.scope
    const connected = yield* Deferred.make<readonly [SqlClient.SqlClient, DbPool["Type"]]>()
    const lastError = yield* Ref.make("connecting to the database")
    const backend = Option.isSome(config.databaseUrl) ? "postgresql" : "pglite"

    const clientLayer: Layer.Layer<SqlClient.SqlClient | DbPool, unknown> = Option.match(config.databaseUrl, {
      // PGlite's code is loaded only when it is used
      onNone: () =>
        Layer.unwrapEffect(Effect.map(Effect.promise(() => import("./PgliteClient.js")), (PgliteClient) =>
          PgliteClient.layer({
            dataDir: config.dataDir,
            template: config.pgliteTemplate,
            sharedBuffers: config.pgliteSharedBuffers,
            liftoffOnly: config.pgliteLiftoffOnly
          }))),
      onSome: (url) => pgLayer(Redacted.value(url), config.dbPoolSize)
    })

    const attempt = Effect.gen(function*() {
      const child = yield* Scope.fork(scope, ExecutionStrategy.sequential)
      return yield* Layer.buildWithScope(clientLayer, child).pipe(
        Effect.map((ctx) => [Context.get(ctx, SqlClient.SqlClient), Context.get(ctx, DbPool)] as const),
        Effect.tap(([sql]) => Effect.provideService(runMigrations, SqlClient.SqlClient, sql)),
        Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(child, exit) : Effect.void)
      )
    })

    const retrySchedule = Schedule.exponential("100 millis", 2).pipe(
      Schedule.jittered,
      Schedule.union(Schedule.spaced(Duration.millis(config.dbRetryMaxDelayMs)))
    )

    yield* attempt.pipe(
      Effect.tapErrorCause((cause) => {
        const message = describe(Cause.squash(cause))
        return Ref.set(lastError, message).pipe(
          Effect.zipRight(Effect.logWarning("database not ready; retrying").pipe(Effect.annotateLogs("reason", message)))
        )
      }),
      Effect.retry(retrySchedule),
      Effect.flatMap((sql) => Deferred.succeed(connected, sql)),
      Effect.zipRight(Effect.logInfo("database connected and migrated").pipe(Effect.annotateLogs("database", backend))),
      Effect.forkScoped
    )

    const unavailable = (message: string) => new StorageUnavailable({ message })

    /** The client, or 503 at once while the database has never been reached. */
    const client = Deferred.poll(connected).pipe(
      Effect.flatMap(Option.match({
        onNone: () => Effect.flatMap(Ref.get(lastError), (m) => Effect.fail(unavailable(`database not ready: ${m}`))),
        onSome: (d) => Effect.map(d, ([sql]) => sql)
      }))
    )

    const readiness = Effect.gen(function*() {
      const [sql] = yield* Deferred.poll(connected).pipe(
        Effect.flatMap(Option.match({
          onNone: () => Effect.flatMap(Ref.get(lastError), (reason) => Effect.fail(new NotReady({ reason }))),
          onSome: (d) => d
        }))
      )
      yield* sql`SELECT 1`.pipe(
        Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new NotReady({ reason: "database ping timed out" }) }),
        Effect.catchTag("SqlError", (e) => Effect.fail(new NotReady({ reason: describe(e) })))
      )
      return { status: "ready" as const, database: backend }
    })

    return {
      client,
      readiness,
      awaitConnected: Effect.map(Deferred.await(connected), ([sql]) => sql),
      /** The connections' use right now; none before the database is first reached. */
      poolUsage: Effect.flatMap(Deferred.poll(connected), Option.match({
        onNone: () => Effect.succeedNone,
        onSome: (d) => Effect.map(d, ([, pool]) => Option.some<PoolUsage>(pool.usage()))
      })),
      /** Run a query; any SQL failure is a 503 to the caller and an error line in the log. */
      use: <A, E, R>(f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E, R>): Effect.Effect<A, StorageUnavailable, R> =>
        Effect.flatMap(client, (sql) =>
          f(sql).pipe(
            Effect.catchAll((e) =>
              Effect.logError("storage failure").pipe(
                Effect.annotateLogs("reason", describe(e)),
                Effect.zipRight(Effect.fail(unavailable("storage is unavailable; retry later")))
              )
            )
          ))
    } as const
  })
}) {}
