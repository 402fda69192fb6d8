import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

// `topic_totals` answers GET /topics without counting millions of rows: each insert adds its rows per topic
// in the same transaction, into the shard row its `event_totals` update uses, so concurrent writers of one
// topic do not queue on one row. A topic's figures are the sum (and min/max) over its shard rows.
// The two indexes serve the filters of GET /events and /events/export: a time range within a topic (with
// `seq`, so the newest in a range are found from the index alone), and a topic's events from one source in
// storage order.
export default Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE TABLE topic_totals (
      topic text NOT NULL,
      shard smallint NOT NULL,
      total bigint NOT NULL,
      first_received_at timestamptz NOT NULL,
      last_received_at timestamptz NOT NULL,
      PRIMARY KEY (topic, shard)
    )`
  yield* sql`
    INSERT INTO topic_totals (topic, shard, total, first_received_at, last_received_at)
    SELECT topic, 0, count(*), min(received_at), max(received_at) FROM events GROUP BY topic`
  yield* sql`CREATE INDEX events_topic_timestamp_idx ON events (topic, "timestamp") INCLUDE (seq)`
  yield* sql`CREATE INDEX events_topic_source_seq_idx ON events (topic, source, seq)`
})
