import type { SqlClient } from "@effect/sql/SqlClient"
import { Effect, Layer, Stream } from "effect"
import { Database } from "../../src/aggregator/storage/Database.js"
import { EventStore } from "../../src/aggregator/storage/EventStore.js"
import { StorageUnavailable } from "../../src/domain/Errors.js"

/** The Database test layer with no database behind it: every query is a 503, readiness says ready. */
export const databaseUnreachable = Layer.succeed(
  Database,
  Database.make({
    client: Effect.fail(new StorageUnavailable({ message: "no database in this test" })),
    readiness: Effect.succeed({ status: "ready" as const, database: "postgresql" as const }),
    awaitConnected: Effect.never,
    poolUsage: Effect.succeedNone,
    use: () => Effect.fail(new StorageUnavailable({ message: "no database in this test" }))
  })
)

/** The Database test layer over a SqlClient the test made (connected and migrated as the test decides). */
export const databaseOver = (sql: SqlClient) =>
  Layer.succeed(
    Database,
    Database.make({
      client: Effect.succeed(sql),
      readiness: Effect.succeed({ status: "ready" as const, database: "postgresql" as const }),
      awaitConnected: Effect.succeed(sql),
      poolUsage: Effect.succeedNone,
      use: (f) => Effect.orDie(f(sql))
    })
  )

/**
 * The EventStore test layer: writes go to `insertMany` (a test's model of the table), reads find nothing,
 * and the row count is what `totalRows` says. For tests of what sits above storage (group commit, the broker).
 */
export const eventStoreTest = (insertMany: EventStore["insertMany"], totalRows: Effect.Effect<number>) =>
  Layer.succeed(
    EventStore,
    EventStore.make({
      insertMany,
      list: () => Effect.succeed([]),
      page: () => Effect.succeed({ events: [], last: undefined, more: false }),
      exportNdjson: () => Effect.succeed(Stream.empty),
      topicsJson: Effect.succeed("[]"),
      topics: Effect.succeed([]),
      forgetDeleted: () => Effect.void,
      get: () => Effect.succeed(undefined),
      totalRows
    })
  )
