import { Effect, Layer, Stream } from "effect"
import { EventStore } from "../../src/aggregator/storage/EventStore.js"

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
