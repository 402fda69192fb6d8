import type * as Sql from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as MutableRef from "effect/MutableRef"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import type { StorageUnavailable } from "../../domain/Errors.js"
import type { StoredEvent, TopicSummary } from "../../domain/Event.js"
import { Database } from "./Database.js"
import { TOTAL_SHARDS } from "./migrations/0001_create_events.js"

/** A validated event in the form it is written: timestamp normalised to UTC, payload already JSON text. */
export interface NewEvent {
  readonly topic: string
  readonly event_id: string
  readonly timestamp: string
  readonly source: string | null
  readonly payload: string | null
  /** The payload as parsed from the request, when the caller has it (saves parsing `payload` again). */
  readonly payloadValue?: unknown
}

export const eventKey = (topic: string, eventId: string): string => `${topic}\u0000${eventId}`

/** Orders events by (topic, event_id), as the store writes them. */
export const compareKeys = (a: NewEvent, b: NewEvent) =>
  a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0

const sameKey = (a: { topic: string; event_id: string }, b: { topic: string; event_id: string }) =>
  a.topic === b.topic && a.event_id === b.event_id

/** Per input position, the row that call stored, or undefined for a duplicate (of a stored row or of an earlier position). */
export type Inserted = ReadonlyArray<StoredEvent | undefined>

const utcText = (column: string) => `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`

interface Row {
  readonly seq: string | number
  readonly topic: string
  readonly event_id: string
  readonly timestamp: string
  readonly source: string | null
  readonly payload: unknown
  readonly received_at: string
}

type InsertedRow = Omit<Row, "payload">

const toStored = (r: Row): StoredEvent => ({ ...r, seq: Number(r.seq) })

const notParsed = Symbol("notParsed")

/**
 * A stored event whose payload is still the JSON text it was sent in (from a scanned batch): parsed on the
 * first read of `payload`, so an announcement nobody listens to never parses it. `payload` is a getter and
 * `toJSON` writes the event in the schema's field order, so JSON.stringify and property reads see the
 * event as it is; a spread does not copy the payload.
 */
class StoredRow implements StoredEvent {
  readonly seq: number
  readonly topic: string
  readonly event_id: string
  readonly timestamp: string
  readonly source: string | null
  readonly received_at: string
  readonly #text: string
  #value: unknown = notParsed
  constructor(r: InsertedRow, text: string) {
    this.seq = Number(r.seq)
    this.topic = r.topic
    this.event_id = r.event_id
    this.timestamp = r.timestamp
    this.source = r.source
    this.received_at = r.received_at
    this.#text = text
  }
  get payload(): unknown {
    if (this.#value === notParsed) this.#value = JSON.parse(this.#text)
    return this.#value
  }
  toJSON(): StoredEvent {
    const { event_id, received_at, seq, source, timestamp, topic } = this
    return { seq, topic, event_id, timestamp, source, payload: this.payload, received_at }
  }
}

// The payload is not read back from the database: the caller's copy is the one that was stored.
const stored = (r: InsertedRow, e: NewEvent): StoredEvent =>
  e.payloadValue !== undefined || e.payload === null
    ? {
      seq: Number(r.seq),
      topic: r.topic,
      event_id: r.event_id,
      timestamp: r.timestamp,
      source: r.source,
      payload: e.payloadValue !== undefined ? e.payloadValue : null,
      received_at: r.received_at
    }
    : new StoredRow(r, e.payload)

// A topic and a source usually repeat from the row before: their JSON is reused.
const rowsJson = (rows: ReadonlyArray<NewEvent>): string => {
  let text = "["
  let topic: string | undefined, topicJson = ""
  let source: string | null | undefined, sourceJson = ""
  for (let i = 0; i < rows.length; i++) {
    const e = rows[i]
    if (e.topic !== topic) {
      topic = e.topic
      topicJson = JSON.stringify(topic)
    }
    if (e.source !== source) {
      source = e.source
      sourceJson = source === null ? "null" : JSON.stringify(source)
    }
    text += `${i === 0 ? "" : ","}{"t":${topicJson},"e":${JSON.stringify(e.event_id)},"ts":${JSON.stringify(e.timestamp)},"s":${sourceJson},` +
      `"p":${e.payload === null ? "null" : `[${e.payload}]`}}`
  }
  return text + "]"
}

/** Which events a read selects; `since` (inclusive) and `until` (exclusive) bound the event's `timestamp`. */
export interface EventFilter {
  readonly topic?: string | undefined
  readonly source?: string | undefined
  readonly since?: string | undefined
  readonly until?: string | undefined
}

export interface PageOptions extends EventFilter {
  readonly limit: number
  readonly maxBytes: number
  readonly before?: number | undefined
  readonly after?: number | undefined
  readonly ascending?: boolean
}

/** Events as JSON texts; `last` is the seq to continue from when `more`. */
export interface Page {
  readonly events: ReadonlyArray<string>
  readonly last: number | undefined
  readonly more: boolean
}

const EXPORT_CHUNK_ROWS = 1000

const filterSql = (sql: Sql.SqlClient, f: EventFilter) =>
  sql`${f.topic !== undefined ? sql`AND topic = ${f.topic}` : sql``}
    ${f.source !== undefined ? sql`AND source = ${f.source}` : sql``}
    ${f.since !== undefined ? sql`AND "timestamp" >= ${f.since}::timestamptz` : sql``}
    ${f.until !== undefined ? sql`AND "timestamp" < ${f.until}::timestamptz` : sql``}`

// A stored event as the JSON text the API answers with (the StoredEvent schema's fields, in its order),
// rendered by the database: a large payload is never parsed and re-serialised here.
const eventJson = `'{"seq":' || seq || ',"topic":' || to_json(topic) || ',"event_id":' || to_json(event_id) ||
  ',"timestamp":"' || ${utcText(`"timestamp"`)} || '","source":' || coalesce(to_json(source)::text, 'null') ||
  ',"payload":' || coalesce(payload::text, 'null') || ',"received_at":"' || ${utcText("received_at")} || '"}'`

const chunks = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size))
  return out
}

export class EventStore extends Effect.Service<EventStore>()("Aggregator/EventStore", {
  effect: Effect.gen(function*() {
    const db = yield* Database
    // the totals row the next insert adds to, in turn, so concurrent transactions rarely update the same row
    const nextShard = MutableRef.make(Math.floor(Math.random() * TOTAL_SHARDS))

    // The rows go as one JSON text: `pg` sends one string instead of escaping five arrays element by
    // element, and the payloads (already JSON) are embedded as they are. A payload is wrapped in `[…]` so a
    // JSON `null` payload stays a jsonb null, not SQL NULL.
    const insertStatement = (sql: Sql.SqlClient, rows: ReadonlyArray<NewEvent>, shard: number) =>
      sql<InsertedRow>`
        WITH ins AS (
          INSERT INTO events (topic, event_id, "timestamp", source, payload)
          SELECT u.t, u.e, u.ts::timestamptz, u.s, u.p -> 0
          FROM ROWS FROM (json_to_recordset(${rowsJson(rows)}::json) AS (t text, e text, ts text, s text, p jsonb))
            WITH ORDINALITY AS u(t, e, ts, s, p, ord)
          ORDER BY u.ord
          ON CONFLICT (topic, event_id) DO NOTHING
          RETURNING seq, topic, event_id, "timestamp", source, received_at
        ), bump AS (
          UPDATE event_totals SET total = total + (SELECT count(*) FROM ins)
          WHERE shard = ${shard} AND EXISTS (SELECT 1 FROM ins)
          RETURNING shard
        ), per_topic AS (
          INSERT INTO topic_totals AS t (topic, shard, total, first_received_at, last_received_at)
          SELECT ins.topic, bump.shard, count(*), min(ins.received_at), max(ins.received_at)
          FROM ins CROSS JOIN bump GROUP BY ins.topic, bump.shard ORDER BY ins.topic
          ON CONFLICT (topic, shard) DO UPDATE SET total = t.total + excluded.total,
            first_received_at = least(t.first_received_at, excluded.first_received_at),
            last_received_at = greatest(t.last_received_at, excluded.last_received_at)
        )
        SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source,
               ${sql.literal(utcText("received_at"))} AS received_at
        FROM ins ORDER BY seq`

    // `per_topic` reads `bump`, so a transaction takes its `event_totals` shard row before any `topic_totals`
    // row (of the same shard, in topic order): writers that share a shard queue on the first, never deadlock.
    /**
     * Stores the events in one transaction and returns, per input position, the row stored for it (undefined
     * for a duplicate). A key repeated in the input is stored once: its first occurrence wins. Rows go in key
     * order so concurrent transactions take index locks in the same order and cannot deadlock; past
     * `statementRows` they go in several statements of the same transaction, so a call is stored whole or not at all.
     */
    const insertMany = (events: ReadonlyArray<NewEvent>, statementRows = 1000) =>
      db.use((sql) => {
        // positions in key order, repeats adjacent with the first occurrence first (the sort is stable)
        // (a batch from one producer usually arrives in key order already: then there is nothing to sort)
        let inOrder = true
        for (let i = 1; i < events.length && inOrder; i++) inOrder = compareKeys(events[i - 1], events[i]) <= 0
        const unique: Array<NewEvent> = []
        const uniqueAt: Array<number> = []
        const keep = (i: number) => {
          if (unique.length === 0 || !sameKey(unique[unique.length - 1], events[i])) {
            unique.push(events[i])
            uniqueAt.push(i)
          }
        }
        if (inOrder) for (let i = 0; i < events.length; i++) keep(i)
        else for (const i of events.map((_, i) => i).sort((a, b) => compareKeys(events[a], events[b]))) keep(i)
        const shard = MutableRef.getAndUpdate(nextShard, (n) => (n + 1) % TOTAL_SHARDS)
        const statements = unique.length <= statementRows
          ? insertStatement(sql, unique, shard)
          : Effect.map(
            Effect.forEach(chunks(unique, statementRows), (part) => insertStatement(sql, part, shard)),
            (parts) => parts.flat()
          )
        return Effect.map(sql.withTransaction(statements), (rows): Inserted => {
          const result = new Array<StoredEvent | undefined>(events.length).fill(undefined)
          // The new rows come back in seq order, which is the order they were inserted in: key order.
          let r = 0
          for (let u = 0; u < unique.length && r < rows.length; u++) {
            if (sameKey(rows[r], unique[u])) result[uniqueAt[u]] = stored(rows[r++], events[uniqueAt[u]])
          }
          if (r === rows.length) return result
          // not in that order after all: match by key
          result.fill(undefined)
          const at = new Map(unique.map((e, u) => [eventKey(e.topic, e.event_id), uniqueAt[u]]))
          for (const row of rows) {
            const i = at.get(eventKey(row.topic, row.event_id))!
            result[i] = stored(row, events[i])
          }
          return result
        })
      }).pipe(Effect.withSpan("EventStore.insertMany", { attributes: { events: events.length }, captureStackTrace: false }))

    const list = (options: EventFilter & { readonly limit: number; readonly before?: number }) =>
      db.use((sql) =>
        sql<Row>`
          SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source, payload,
                 ${sql.literal(utcText("received_at"))} AS received_at
          FROM events
          WHERE true ${filterSql(sql, options)}
            ${options.before !== undefined ? sql`AND seq < ${options.before}` : sql``}
          ORDER BY seq DESC
          LIMIT ${options.limit}`
      ).pipe(Effect.map((rows) => rows.map(toStored)), Effect.withSpan("EventStore.list"))

    /**
     * Like `list`, within about `maxBytes` of payload (and at least one event), each event as its JSON text
     * rendered by the database (never parsed here). The sizes are read first, a few rows at a time, so an
     * oversized listing never leaves the database. A payload's size is its decompressed jsonb size
     * (`|| '{}'` builds it in memory), several times cheaper than rendering it as text; it matches the JSON
     * text closely except for strings full of escapes, which it undercounts. Newest first below `before`, or
     * oldest first above `after` when `ascending`. `more` tells whether further events may follow (continue
     * from `last`).
     */
    const page = (options: PageOptions) =>
      db.use((sql) =>
        Effect.gen(function*() {
          const filter = filterSql(sql, options)
          const asc = options.ascending === true
          const order = asc ? sql`ORDER BY e.seq` : sql`ORDER BY e.seq DESC`
          // With an upper time bound the planner, taking timestamps to be spread evenly over storage order,
          // walks the storage-order index from the newest row and may skip millions of newer rows first;
          // ordering by `seq + 0` makes it take the rows in the time range from the (topic, timestamp) index
          // and sort those.
          const key = sql.literal(options.topic !== undefined && options.until !== undefined ? "seq + 0" : "seq")
          const pick = asc ? sql`ORDER BY ${key}` : sql`ORDER BY ${key} DESC`
          let total = 0
          let from: number | undefined = asc ? options.after : options.before
          let first: number | undefined
          let last: number | undefined
          let cut = false
          let counted = 0
          const seqs: Array<number> = []
          // Small steps, sized by what is left of the budget at the average size so far: reading sizes
          // detoasts the payloads, so it reads little more than the page will hold.
          for (let step = 32; counted < options.limit && !cut; step = Math.ceil(1.25 * (options.maxBytes - total) / (total / counted)) + 1) {
            const want = Math.min(step, options.limit - counted)
            // the rows are picked first (from an index alone where one covers the filter), sized after
            const sizes = yield* sql<{ seq: string | number; size: number }>`
              SELECT e.seq, coalesce(pg_column_size(e.payload || '{}'::jsonb), 0) + 256 AS size
              FROM (
                SELECT seq FROM events
                WHERE true ${filter} ${from === undefined ? sql`` : asc ? sql`AND seq > ${from}` : sql`AND seq < ${from}`}
                ${pick} LIMIT ${want}
              ) picked JOIN events e ON e.seq = picked.seq
              ${order}`
            for (const row of sizes) {
              if (counted > 0 && total + Number(row.size) > options.maxBytes) {
                cut = true
                break
              }
              total += Number(row.size)
              counted++
              last = Number(row.seq)
              first ??= last
              seqs.push(last)
            }
            if (sizes.length < want) break
            from = last
          }
          if (first === undefined || last === undefined) return { events: [], last: undefined, more: false } as Page
          const rows = yield* sql<{ json: string }>`
            SELECT ${sql.literal(eventJson)} AS json FROM events e WHERE seq = ANY(${seqs}::int8[]) ${order}`
          return { events: rows.map((r) => r.json), last, more: cut || counted === options.limit } as Page
        })
      ).pipe(Effect.withSpan("EventStore.page"))

    /**
     * Every event matching `filter`, oldest first, as JSON texts in chunks of about `chunkBytes` (at least
     * one event), one query each. The first is read before the stream is returned (so a database that cannot
     * answer fails the call); each next one only when the consumer pulls it, so memory stays bounded whatever
     * the count and a consumer that stops (a client gone) stops the queries.
     */
    const exportNdjson = (filter: EventFilter, chunkBytes: number) => {
      const read = (after: number | undefined) =>
        page({ ...filter, after, ascending: true, limit: EXPORT_CHUNK_ROWS, maxBytes: chunkBytes })
      return Effect.map(read(undefined), (first): Stream.Stream<ReadonlyArray<string>, StorageUnavailable> =>
        Stream.concat(
          Stream.make(first.events),
          first.more
            ? Stream.paginateEffect(first.last, (after) =>
              Effect.map(read(after), (p) => [p.events, p.more ? Option.some(p.last) : Option.none()] as const))
            : Stream.empty
        ).pipe(Stream.filter((events) => events.length > 0)))
    }

    /**
     * Every topic with its stored count and first/last `received_at`, in topic order, as the JSON array the
     * API answers with (TopicSummary's fields, in its order), rendered by the database.
     */
    const topicsJson = db.use((sql) =>
      sql<{ json: string }>`
        SELECT coalesce(json_agg(json_build_object(
                 'topic', topic, 'events', events, 'first_received_at', first_received_at, 'last_received_at', last_received_at
               ) ORDER BY topic)::text, '[]') AS json
        FROM (
          SELECT topic, sum(total)::int8 AS events,
                 ${sql.literal(utcText("min(first_received_at)"))} AS first_received_at,
                 ${sql.literal(utcText("max(last_received_at)"))} AS last_received_at
          FROM topic_totals GROUP BY topic HAVING sum(total) > 0
        ) t`
    ).pipe(Effect.map((rows) => rows[0].json), Effect.withSpan("EventStore.topicsJson"))

    /** The same, decoded. */
    const topics = Effect.map(topicsJson, (json) => JSON.parse(json) as Array<TopicSummary>)

    /**
     * For whatever deletes events (retention): call it in the deleting transaction, after the DELETE, with
     * how many rows of each topic went. It takes them off `event_totals` (so do not) and `topic_totals`, in
     * the lock order the insert uses (the `event_totals` row first, then topics in order), drops the topics
     * with nothing left and moves each topic's first `received_at` to that of its oldest remaining event.
     */
    const forgetDeleted = (deleted: ReadonlyArray<{ readonly topic: string; readonly count: number }>) =>
      db.use((sql) =>
        Effect.gen(function*() {
          const counts = new Map<string, number>()
          for (const d of deleted) if (d.count > 0) counts.set(d.topic, (counts.get(d.topic) ?? 0) + d.count)
          if (counts.size === 0) return
          const sorted = [...counts].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
          const total = sorted.reduce((sum, [, n]) => sum + n, 0)
          const shard = MutableRef.getAndUpdate(nextShard, (n) => (n + 1) % TOTAL_SHARDS)
          const rows = JSON.stringify(sorted.map(([topic, count]) => ({ topic, count })))
          const gone = sql`SELECT d.topic, d.count FROM json_to_recordset(${rows}::json) AS d(topic text, count int8)`
          yield* sql`UPDATE event_totals SET total = total - ${total} WHERE shard = ${shard}`
          yield* sql`
            SELECT 1 FROM topic_totals WHERE topic IN (SELECT topic FROM (${gone}) d)
            ORDER BY topic, shard FOR UPDATE`
          yield* sql`
            INSERT INTO topic_totals AS t (topic, shard, total, first_received_at, last_received_at)
            SELECT d.topic, ${shard}, -d.count, 'infinity', '-infinity' FROM (${gone}) d ORDER BY d.topic
            ON CONFLICT (topic, shard) DO UPDATE SET total = t.total + excluded.total`
          yield* sql`
            DELETE FROM topic_totals t USING (${gone}) d
            WHERE t.topic = d.topic AND NOT EXISTS (SELECT 1 FROM events e WHERE e.topic = d.topic)`
          yield* sql`
            UPDATE topic_totals t SET first_received_at = f.first
            FROM (
              SELECT d.topic, (SELECT e.received_at FROM events e WHERE e.topic = d.topic ORDER BY e.seq LIMIT 1) AS first
              FROM (${gone}) d
            ) f
            WHERE t.topic = f.topic AND f.first IS NOT NULL AND t.first_received_at < f.first`
        })
      ).pipe(Effect.withSpan("EventStore.forgetDeleted"))

    const get = (topic: string, eventId: string) =>
      db.use((sql) =>
        sql<Row>`
          SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source, payload,
                 ${sql.literal(utcText("received_at"))} AS received_at
          FROM events WHERE topic = ${topic} AND event_id = ${eventId}`
      ).pipe(Effect.map((rows) => rows.length === 0 ? undefined : toStored(rows[0])), Effect.withSpan("EventStore.get"))

    const totalRows = db.use((sql) => sql<{ total: string }>`SELECT coalesce(sum(total), 0)::int8 AS total FROM event_totals`)
      .pipe(Effect.map((rows) => Number(rows[0]?.total ?? 0)), Effect.withSpan("EventStore.totalRows"))

    return { insertMany, list, page, exportNdjson, topicsJson, topics, forgetDeleted, get, totalRows } as const
  }),
  dependencies: [Database.Default]
}) {}
