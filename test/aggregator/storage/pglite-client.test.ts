import { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import { describe, expect, it, layer } from "@effect/vitest"
import { ConfigProvider, Context, Deferred, Effect, FastCheck as fc, Fiber, Layer } from "effect"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { PGlite } from "@electric-sql/pglite"
import { AggregatorConfig } from "../../../src/aggregator/Config.js"
import { EventStore, type NewEvent } from "../../../src/aggregator/storage/EventStore.js"
import { runMigrations } from "../../../src/aggregator/storage/Migrations.js"
import * as PgliteClient from "../../../src/aggregator/storage/PgliteClient.js"
import { databaseOver } from "../../support/fakes.js"

let counter = 0
const table = (prefix: string) => `${prefix}_${counter++}`

/** The client from a layer built in the current scope. */
const clientOf = (l: Layer.Layer<SqlClient.SqlClient, SqlError>) =>
  Effect.map(Layer.build(l), (ctx) => Context.get(ctx, SqlClient.SqlClient))

/**
 * Fiber A opens a transaction, inserts 'a', then fails; while it is open, `other` runs from a second fiber.
 * A waits for `other` to finish, or at most half a second when the lock makes `other` wait for A.
 */
const interleave = (
  sql: SqlClient.SqlClient,
  name: string,
  other: Effect.Effect<unknown, SqlError>
) =>
  Effect.gen(function*() {
    yield* sql`CREATE TABLE ${sql(name)} (k text PRIMARY KEY)`
    const aInserted = yield* Deferred.make<void>()
    const otherDone = yield* Deferred.make<void>()
    const a = yield* sql.withTransaction(
      Effect.gen(function*() {
        yield* sql`INSERT INTO ${sql(name)} VALUES ('a')`
        yield* Deferred.succeed(aInserted, undefined)
        yield* Effect.race(Deferred.await(otherDone), Effect.sleep("500 millis"))
        return yield* Effect.fail("A gives up" as const)
      })
    ).pipe(Effect.flip, Effect.fork)
    yield* Deferred.await(aInserted)
    yield* other.pipe(Effect.zipRight(Deferred.succeed(otherDone, undefined)))
    expect(yield* Fiber.join(a)).toBe("A gives up")
    const rows = yield* sql<{ k: string }>`SELECT k FROM ${sql(name)} ORDER BY k`
    return rows.map((r) => r.k)
  })

const otherTransaction = (sql: SqlClient.SqlClient, name: string) =>
  sql.withTransaction(sql`INSERT INTO ${sql(name)} VALUES ('b')`)

const otherStatement = (sql: SqlClient.SqlClient, name: string) => sql`INSERT INTO ${sql(name)} VALUES ('c')`

const newEvent = (topic: string, event_id: string, payload: unknown = null): NewEvent => ({
  topic,
  event_id,
  timestamp: "2025-03-04T05:06:07.123456Z",
  source: payload === null ? null : "probe",
  payload: payload === null ? null : JSON.stringify(payload)
})

layer(PgliteClient.layer({ dataDir: undefined }), { excludeTestServices: true, timeout: "120 seconds" })(
  "PgliteClient in memory",
  (it) => {
    it.effect("parameters bind; int8 comes back as a string as node-postgres gives it, numeric too", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const rows = yield* sql`
          SELECT ${41}::int + 1 AS n, ${"x"} || 'y' AS s, 9007199254740993::int8 AS big,
                 count(*) AS c, 1.50::numeric AS num, ${true}::bool AS b
          FROM generate_series(1, 3)`
        expect(rows).toEqual([{ n: 42, s: "xy", big: "9007199254740993", c: "3", num: "1.50", b: true }])
        expect(sql.onDialectOrElse({ pg: () => "pg", orElse: () => "other" })).toBe("pg")
      }))

    it.effect("a JS array binds as one Postgres array: unnest(${arr}::text[]) keeps nulls, quotes, commas", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const keys = ["a", "b,c", "q\"x", "{}", "back\\slash", "NULL", "ü 🎉"]
        const sources = ["s", null, "t", null, "u", "v", null]
        const rows = yield* sql<{ k: string; s: string | null; ord: string }>`
          SELECT k, s, ord FROM unnest(${keys}::text[], ${sources}::text[]) WITH ORDINALITY AS u(k, s, ord)`
        expect(rows).toEqual(keys.map((k, i) => ({ k, s: sources[i], ord: String(i + 1) })))
        const ints = yield* sql<{ x: number }>`SELECT x FROM unnest(${[3, 1, 2]}::int[]) AS x ORDER BY x`
        expect(ints.map((r) => r.x)).toEqual([1, 2, 3])
      }))

    it.effect("jsonb round trip and INSERT … ON CONFLICT … RETURNING lists only new rows", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const name = table("docs")
        yield* sql`CREATE TABLE ${sql(name)} (id text PRIMARY KEY, doc jsonb, at timestamptz NOT NULL DEFAULT now())`
        const doc = { nested: [1, { x: "y" }], unicode: "ü", n: null }
        const first = yield* sql`
          WITH ins AS (
            INSERT INTO ${sql(name)} (id, doc) SELECT id, ${JSON.stringify(doc)}::jsonb
            FROM unnest(${["1", "2", "1"]}::text[]) AS id
            ON CONFLICT (id) DO NOTHING RETURNING id, doc
          ) SELECT * FROM ins ORDER BY id`
        expect(first).toEqual([{ id: "1", doc }, { id: "2", doc }])
        const again = yield* sql`INSERT INTO ${sql(name)} (id) VALUES ('2'), ('3') ON CONFLICT (id) DO NOTHING RETURNING id`
        expect(again).toEqual([{ id: "3" }])
        const [row] = yield* sql<{ doc: unknown; at: string }>`
          SELECT doc, to_char(at AT TIME ZONE 'UTC', 'YYYY') AS at FROM ${sql(name)} WHERE id = '1'`
        expect(row.doc).toEqual(doc)
        expect(row.at).toMatch(/^\d{4}$/)
      }))

    it.effect("a failing statement is a SqlError that keeps the Postgres error; the client goes on working", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const error = yield* Effect.flip(sql`SELECT * FROM no_such_table`)
        expect(error._tag).toBe("SqlError")
        expect((error.cause as { code?: string }).code).toBe("42P01")
        const failedTx = yield* Effect.flip(sql.withTransaction(sql`SELECT 1/0`))
        expect((failedTx.cause as { code?: string }).code).toBe("22012")
        expect(yield* sql`SELECT 1 AS one`).toEqual([{ one: 1 }])
      }))

    it.effect("a nested transaction is a savepoint: its failure undoes only its own rows", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const name = table("nested")
        yield* sql`CREATE TABLE ${sql(name)} (k text PRIMARY KEY)`
        yield* sql.withTransaction(
          Effect.gen(function*() {
            yield* sql`INSERT INTO ${sql(name)} VALUES ('outer')`
            yield* sql.withTransaction(
              sql`INSERT INTO ${sql(name)} VALUES ('inner')`.pipe(Effect.zipRight(Effect.fail("no")))
            ).pipe(Effect.ignore)
          })
        )
        expect(yield* sql`SELECT k FROM ${sql(name)}`).toEqual([{ k: "outer" }])
      }))

    it.effect("the lock: a concurrent COMMIT cannot commit another fiber's rolled back row", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const name = table("leak_tx")
        expect(yield* interleave(sql, name, otherTransaction(sql, name))).toEqual(["b"])
      }))

    it.effect("the lock: a statement outside a transaction is not swallowed by another fiber's rollback", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const name = table("leak_stmt")
        expect(yield* interleave(sql, name, otherStatement(sql, name))).toEqual(["c"])
      }))

    it.effect.prop(
      "50 concurrent transactions inserting overlapping keys store exactly the distinct keys, each reported new once",
      [fc.array(fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 12 }), { minLength: 50, maxLength: 50 })],
      ([batches]) =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const name = table("keys")
          yield* sql`CREATE TABLE ${sql(name)} (k text PRIMARY KEY)`
          const reported = yield* Effect.forEach(batches, (batch) =>
            sql.withTransaction(
              Effect.gen(function*() {
                const rows = yield* sql<{ k: string }>`
                  INSERT INTO ${sql(name)} SELECT k FROM unnest(${batch.map(String)}::text[]) AS k
                  ON CONFLICT DO NOTHING RETURNING k`
                // let other fibers run while this transaction is open
                yield* Effect.yieldNow()
                return rows
              })
            ), { concurrency: "unbounded" })
          const distinct = [...new Set(batches.flat().map(String))].sort()
          const stored = (yield* sql<{ k: string }>`SELECT k FROM ${sql(name)} ORDER BY k`).map((r) => r.k)
          expect(stored).toEqual(distinct)
          expect(reported.flatMap((rows) => rows.map((r) => r.k)).sort()).toEqual(distinct)
          yield* sql`DROP TABLE ${sql(name)}`
        }),
      { fastCheck: { numRuns: 15 } }
    )

    it.effect("our migrations run (twice: the second is a no-op) and the EventStore's SQL works on them", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const first = yield* Effect.provideService(runMigrations, SqlClient.SqlClient, sql)
        expect(first.map(([id, name]) => [id, name])).toEqual([[1, "create_events"], [2, "topics_and_filters"]])
        expect(yield* Effect.provideService(runMigrations, SqlClient.SqlClient, sql)).toEqual([])

        const store = yield* Effect.provide(EventStore, EventStore.DefaultWithoutDependencies.pipe(Layer.provide(databaseOver(sql))))
        const batch = [newEvent("t", "1", { a: [1] }), newEvent("t", "2"), newEvent("t", "1"), newEvent("u", "1")]
        expect((yield* store.insertMany(batch)).map((row) => row !== undefined)).toEqual([true, true, false, true])
        expect((yield* store.insertMany([newEvent("t", "2"), newEvent("t", "3")])).map((row) => row !== undefined)).toEqual([false, true])
        expect(yield* store.totalRows).toBe(4)
        const got = yield* store.get("t", "1")
        expect(got).toMatchObject({
          topic: "t",
          event_id: "1",
          timestamp: "2025-03-04T05:06:07.123456Z",
          source: "probe",
          payload: { a: [1] }
        })
        expect(got?.received_at).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/)
        const listed = yield* store.list({ topic: "t", limit: 10 })
        expect(listed.map((e) => e.event_id)).toEqual(["3", "2", "1"])
        expect(typeof listed[0].seq).toBe("number")
        expect((yield* store.topics).map((t) => [t.topic, t.events])).toEqual([["t", 3], ["u", 1]])
      }))
  }
)

describe("PGlite's one connection, shared without a lock (what PgliteClient's lock prevents)", () => {
  it.live("a concurrent COMMIT commits the rolled back row too, and a plain statement is rolled back", () =>
    Effect.promise(async () => {
      const db = await PGlite.create()
      try {
        const rows = async (name: string) => (await db.query<{ k: string }>(`SELECT k FROM ${name} ORDER BY k`)).rows.map((r) => r.k)
        // A: BEGIN, insert 'a'; meanwhile B runs a transaction of its own; then A rolls back
        await db.exec("CREATE TABLE leak_tx (k text PRIMARY KEY)")
        await db.exec("BEGIN")
        await db.exec("INSERT INTO leak_tx VALUES ('a')")
        await db.exec("BEGIN; INSERT INTO leak_tx VALUES ('b'); COMMIT")
        await db.exec("ROLLBACK")
        expect(await rows("leak_tx")).toEqual(["a", "b"])
        // A as before; meanwhile B runs one plain statement, which A's rollback takes with it
        await db.exec("CREATE TABLE leak_stmt (k text PRIMARY KEY)")
        await db.exec("BEGIN")
        await db.exec("INSERT INTO leak_stmt VALUES ('a')")
        await db.exec("INSERT INTO leak_stmt VALUES ('c')")
        await db.exec("ROLLBACK")
        expect(await rows("leak_stmt")).toEqual([])
      } finally {
        await db.close()
      }
    }), 120_000)
})

describe("PgliteClient on disk", () => {
  it.live("rows survive closing and reopening; missing parent folders are created", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "pglite-client-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      const dataDir = Path.join(root, "nested", "deeper", "db")
      const open = PgliteClient.layer({ dataDir })

      yield* Effect.scoped(Effect.gen(function*() {
        const sql = yield* clientOf(open)
        yield* sql`CREATE TABLE kept (k text PRIMARY KEY, n int8)`
        yield* sql.withTransaction(sql`INSERT INTO kept SELECT k, 1 FROM unnest(${["x", "y"]}::text[]) AS k`)
      }))
      expect(Fs.existsSync(Path.join(dataDir, "PG_VERSION"))).toBe(true)

      const rows = yield* Effect.scoped(Effect.flatMap(clientOf(open), (sql) => sql`SELECT k, n FROM kept ORDER BY k`))
      expect(rows).toEqual([{ k: "x", n: "1" }, { k: "y", n: "1" }])
    }).pipe(Effect.scoped), 120_000)

  it.live("a new data directory starts as a copy of the template; the template, an existing database and a folder with other files are left as they are", () =>
    Effect.gen(function*() {
      const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "pglite-template-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true })))
      // the one `npm run build` made, else a new one (initdb, slower)
      const template = Path.join(root, "template")
      const built = Path.resolve("dist", "pgdata-template")
      if (Fs.existsSync(Path.join(built, "PG_VERSION"))) Fs.cpSync(built, template, { recursive: true })
      else yield* Effect.promise(() => PgliteClient.makeTemplate(template))
      // a mark in the template shows that a database came from it and not from initdb
      yield* Effect.scoped(Effect.flatMap(clientOf(PgliteClient.layer({ dataDir: template })), (sql) =>
        sql`CREATE TABLE from_template (k text)`))
      const templateFiles = () => Fs.readdirSync(template, { recursive: true }).length
      const before = templateFiles()

      const tables = (dataDir: string) =>
        Effect.scoped(Effect.flatMap(
          clientOf(PgliteClient.layer({ dataDir, template })),
          (sql) => sql<{ t: string }>`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`
        )).pipe(Effect.map((rows) => rows.map((r) => r.t)))

      const fresh = Path.join(root, "a", "fresh")
      expect(yield* tables(fresh)).toEqual(["from_template"])
      expect(Fs.readdirSync(Path.dirname(fresh))).toEqual(["fresh"])
      yield* Effect.scoped(Effect.flatMap(clientOf(PgliteClient.layer({ dataDir: fresh })), (sql) => sql`CREATE TABLE own (k text)`))
      expect(yield* tables(fresh)).toEqual(["from_template", "own"])

      const empty = Path.join(root, "empty")
      Fs.mkdirSync(empty)
      expect(yield* tables(empty)).toEqual(["from_template"])

      expect(templateFiles()).toBe(before)
      const withoutTemplate = Path.join(root, "initdb")
      const initdb = yield* Effect.scoped(Effect.flatMap(
        clientOf(PgliteClient.layer({ dataDir: withoutTemplate, template: Path.join(root, "missing") })),
        (sql) => sql<{ t: string }>`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'`
      ))
      expect(initdb).toEqual([])

      const occupied = Path.join(root, "occupied")
      Fs.mkdirSync(occupied)
      Fs.writeFileSync(Path.join(occupied, "notes.txt"), "mine")
      // not copied over: what PGlite then makes of the folder is its own business
      const opened = yield* tables(occupied).pipe(Effect.either)
      expect(Fs.readFileSync(Path.join(occupied, "notes.txt"), "utf8")).toBe("mine")
      if (opened._tag === "Right") expect(opened.right).not.toContain("from_template")
    }).pipe(Effect.scoped), 240_000)
})

describe("embedded defaults in the configuration", () => {
  const configWith = (env: Record<string, string>) =>
    Effect.provide(AggregatorConfig, AggregatorConfig.Default.pipe(
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
    ))

  it.effect("the template is the one `npm run build` makes (dist/pgdata-template); one flush at a time on PGlite, four on a server", () =>
    Effect.gen(function*() {
      const embedded = yield* configWith({})
      expect(embedded.embedded).toBe(true)
      expect(embedded.pgliteTemplate).toBe(Path.resolve("dist", "pgdata-template"))
      expect(embedded.flushConcurrency).toBe(1)
      expect(embedded.pgliteSharedBuffers).toBe("16MB")
      const server = yield* configWith({ DATABASE_URL: "postgres://x@127.0.0.1:1/x" })
      expect(server.embedded).toBe(false)
      expect(server.flushConcurrency).toBe(4)
      expect((yield* configWith({ FLUSH_CONCURRENCY: "3" })).flushConcurrency).toBe(3)
      expect((yield* configWith({ PGLITE_TEMPLATE: "" })).pgliteTemplate).toBe("")
      const bad = yield* Effect.either(configWith({ PGLITE_SHARED_BUFFERS: "lots" }))
      expect(bad._tag).toBe("Left")
    }))
})
