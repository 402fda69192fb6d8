import * as Reactivity from "@effect/experimental/Reactivity"
import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as PgClient from "@effect/sql-pg/PgClient"
import { PGlite, type QueryOptions, type Results, types } from "@electric-sql/pglite"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"
import * as Fs from "node:fs"
import * as Path from "node:path"
import * as V8 from "node:v8"
import { DbPool } from "./Pool.js"

export interface PgliteClientOptions {
  /** A directory for the database files; `undefined` keeps the database in memory. */
  readonly dataDir: string | undefined
  /**
   * A data directory made by `makeTemplate`: a new `dataDir` starts as a copy of it instead of running initdb,
   * which takes seconds and more memory than everything after it. Ignored when missing.
   */
  readonly template?: string | undefined
  /**
   * PostgreSQL's `shared_buffers` (default 16MB). PGlite touches all of it at start, so PGlite's own 128MB
   * cost about 115 MiB of resident memory before the first query.
   */
  readonly sharedBuffers?: string | undefined
  /** Compile PGlite's WebAssembly with V8's baseline compiler only (default true); see `open`. */
  readonly liftoffOnly?: boolean | undefined
}

type Transform = (<A extends object>(rows: ReadonlyArray<A>) => ReadonlyArray<A>) | undefined

// As node-postgres: int8 stays a string so no precision is lost silently.
const parsers = { [types.INT8]: (value: string) => value }

const failed = (cause: unknown) => new SqlError({ cause, message: "Failed to execute statement" })

// Without parameters node-postgres uses the simple protocol, which allows several statements in one string
// and answers one row list per statement; `exec` is PGlite's simple protocol.
const rowsOf = (results: ReadonlyArray<Results>) =>
  results.length === 1 ? results[0].rows : results.map((r) => r.rows)

const makeConnection = (
  db: PGlite,
  guard: <A>(statement: Effect.Effect<A, SqlError>) => Effect.Effect<A, SqlError>
): Connection => {
  // PGlite cannot cancel a running statement: it keeps the lock until the statement ends.
  const run = (sql: string, params: ReadonlyArray<unknown>, options?: QueryOptions) =>
    guard(Effect.uninterruptible(Effect.tryPromise({
      try: () => params.length === 0 ? db.exec(sql, options) : db.query<Record<string, unknown>>(sql, [...params], options).then((r) => [r]),
      catch: failed
    })))

  const execute = (sql: string, params: ReadonlyArray<unknown>, transformRows: Transform) =>
    Effect.map(run(sql, params), (results) => {
      const rows = rowsOf(results)
      return transformRows ? transformRows(rows) : rows
    })

  return {
    execute,
    executeUnprepared: execute,
    executeRaw: (sql, params) => Effect.map(run(sql, params), (results) => results.length === 1 ? results[0] : results),
    executeValues: (sql, params) =>
      Effect.map(run(sql, params, { rowMode: "array" }), (results) => results[results.length - 1].rows as any),
    executeStream: (sql, params, transformRows) =>
      Stream.fromIterableEffect(execute(sql, params, transformRows))
  }
}

/** The directory on disk a PGlite `dataDir` names, if it names one (not `memory://`, `idb://`, …). */
const directoryOf = (dataDir: string | undefined): string | undefined =>
  dataDir === undefined ? undefined : dataDir.startsWith("file://")
  ? dataDir.slice("file://".length)
  : /^[a-z0-9-]+:\/\//i.test(dataDir)
  ? undefined
  : dataDir

const hasDatabase = (dir: string) => Fs.existsSync(Path.join(dir, "PG_VERSION"))

/**
 * A new (missing or empty) data directory becomes a copy of the template, made beside it and renamed into place,
 * so a start killed half-way leaves no half-made database behind.
 */
const seed = (dir: string, template: string | undefined) => {
  if (template === undefined || template === "" || hasDatabase(dir) || !hasDatabase(template)) return
  if (Fs.existsSync(dir) && Fs.readdirSync(dir).length > 0) return
  const partial = `${dir}.new-${process.pid}`
  Fs.rmSync(partial, { recursive: true, force: true })
  Fs.cpSync(template, partial, { recursive: true })
  Fs.renameSync(partial, dir)
}

const open = (options: PgliteClientOptions) =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () => {
        const dir = directoryOf(options.dataDir)
        if (dir !== undefined) {
          // PGlite creates only the last folder of its path
          Fs.mkdirSync(Path.dirname(Path.resolve(dir)), { recursive: true })
          seed(dir, options.template)
        }
        // V8's optimising tier costs PGlite more CPU and memory than it wins back (BENCHMARKS.md). The flag is
        // read when a module is compiled, and PGlite is the only one.
        if (options.liftoffOnly ?? true) V8.setFlagsFromString("--liftoff-only")
        return PGlite.create(options.dataDir, {
          parsers,
          startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${options.sharedBuffers ?? "16MB"}`]
        })
      },
      catch: (cause) =>
        new SqlError({ cause, message: `PgliteClient: failed to open ${options.dataDir ?? "an in-memory database"}` })
    }),
    (db) => Effect.promise(() => db.close())
  )

/**
 * Runs PGlite's initdb into `dir` (replacing it) and closes the database cleanly: the template a new data directory
 * is copied from. `npm run build` makes one (src/pglite-template).
 */
export const makeTemplate = async (dir: string): Promise<void> => {
  const partial = `${dir}.new-${process.pid}`
  Fs.rmSync(partial, { recursive: true, force: true })
  Fs.mkdirSync(Path.dirname(Path.resolve(dir)), { recursive: true })
  const db = await PGlite.create(partial)
  await db.close()
  Fs.rmSync(dir, { recursive: true, force: true })
  Fs.renameSync(partial, dir)
}

/**
 * An `@effect/sql` client on embedded PostgreSQL (PGlite), with the pg dialect and compiler so the server's
 * migrations and SQL run unchanged. PGlite is one connection: a transaction holds the lock from BEGIN to
 * COMMIT/ROLLBACK and any other statement takes it for its own run, so one fiber's COMMIT can never end
 * another fiber's transaction. A statement run inside a transaction from a fiber that does not carry the
 * transaction (no `TransactionConnection` in its context) waits for the lock, as with a pool of one.
 */
export const make = (options: PgliteClientOptions) =>
  Effect.map(makeWithUsage(options), ({ client }) => client)

const makeWithUsage = (options: PgliteClientOptions) =>
  Effect.gen(function*() {
    const db = yield* open(options)
    const lock = yield* Effect.makeSemaphore(1)
    // Closing waits for the statement or transaction that holds the lock.
    yield* Effect.addFinalizer(() => lock.take(1).pipe(Effect.timeoutOption("10 seconds")))
    // whether the one connection is busy (a statement or a transaction holds the lock), for the pool gauges
    let held = 0
    const take = Effect.zipRight(lock.take(1), Effect.sync(() => held++))
    const release = Effect.zipRight(Effect.sync(() => held--), lock.release(1))

    const unlocked = makeConnection(db, (statement) => statement)
    const locked = makeConnection(db, (statement) =>
      // waits for the lock interruptibly (a timed-out ping gives up its place), as withPermits does
      lock.withPermits(1)(
        Effect.acquireUseRelease(Effect.sync(() => held++), () => statement, () => Effect.sync(() => held--))
      ))
    const holdLock = Effect.acquireRelease(take, () => release)

    const client = yield* SqlClient.make({
      acquirer: Effect.succeed(locked),
      transactionAcquirer: Effect.as(holdLock, unlocked),
      compiler: PgClient.makeCompiler(),
      spanAttributes: [
        ["db.system.name", "postgresql"],
        ["db.namespace", options.dataDir ?? "memory"]
      ]
    })
    const usage = () => ({ max: 1, inUse: held, idle: 1 - held, waiting: undefined })
    return { client, usage }
  })

/** The `SqlClient` on PGlite (and its one connection's use); closing the layer closes the database. */
export const layer = (options: PgliteClientOptions): Layer.Layer<SqlClient.SqlClient | DbPool, SqlError> =>
  Layer.scopedContext(
    Effect.map(makeWithUsage(options), ({ client, usage }) =>
      Context.make(SqlClient.SqlClient, client).pipe(Context.add(DbPool, { usage })))
  ).pipe(Layer.provide(Reactivity.layer))
