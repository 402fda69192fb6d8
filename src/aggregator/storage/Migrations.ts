import * as Migrator from "@effect/sql/Migrator"
import CreateEvents from "./migrations/0001_create_events.js"
import TopicsAndFilters from "./migrations/0002_topics_and_filters.js"

/** Numbered, append-only; run before the aggregator serves. Bundled as a record so `dist/` and vitest agree. */
export const runMigrations = Migrator.make({})({
  loader: Migrator.fromRecord({
    "0001_create_events": CreateEvents,
    "0002_topics_and_filters": TopicsAndFilters
  })
})
