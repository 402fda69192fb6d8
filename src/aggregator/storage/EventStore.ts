import type * as Sql from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as MutableRef from "effect/MutableRef"
import type { StoredEvent } from "../../domain/Event.js"
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

const payloadValue = (e: NewEvent): unknown =>
  e.payloadValue !== undefined ? e.payloadValue : e.payload === null ? null : JSON.parse(e.payload)

export const eventKey = (topic: string, eventId: string): string => `${topic}\u0000${eventId}`

const byKey = (a: NewEvent, b: NewEvent) =>
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

// The payload is not read back from the database: the caller's copy is the one that was stored.
const stored = (r: InsertedRow, e: NewEvent): StoredEvent => ({
  seq: Number(r.seq),
  topic: r.topic,
  event_id: r.event_id,
  timestamp: r.timestamp,
  source: r.source,
  received_at: r.received_at,
  payload: payloadValue(e)
})

const rowsJson = (rows: ReadonlyArray<NewEvent>): string => {
  let text = "["
  for (let i = 0; i < rows.length; i++) {
    const e = rows[i]
    text += `${i === 0 ? "" : ","}{"t":${JSON.stringify(e.topic)},"e":${JSON.stringify(e.event_id)},"ts":${JSON.stringify(e.timestamp)},` +
      `"s":${e.source === null ? "null" : JSON.stringify(e.source)},"p":${e.payload === null ? "null" : `[${e.payload}]`}}`
  }
  return text + "]"
}

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
        )
        SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source,
               ${sql.literal(utcText("received_at"))} AS received_at
        FROM ins ORDER BY seq`

    /**
     * Stores the events in one transaction and returns, per input position, the row stored for it (undefined
     * for a duplicate). A key repeated in the input is stored once: its first occurrence wins. Rows go in key
     * order so concurrent transactions take index locks in the same order and cannot deadlock; past
     * `statementRows` they go in several statements of the same transaction, so a call is stored whole or not at all.
     */
    const insertMany = (events: ReadonlyArray<NewEvent>, statementRows = 1000) =>
      db.use((sql) => {
        // positions in key order, repeats adjacent with the first occurrence first (the sort is stable)
        const order = events.map((_, i) => i).sort((a, b) => byKey(events[a], events[b]))
        const unique: Array<NewEvent> = []
        const uniqueAt: Array<number> = []
        for (const i of order) {
          if (unique.length === 0 || !sameKey(unique[unique.length - 1], events[i])) {
            unique.push(events[i])
            uniqueAt.push(i)
          }
        }
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
      }).pipe(Effect.withSpan("EventStore.insertMany", { attributes: { events: events.length } }))

    const list = (options: { readonly topic?: string; readonly limit: number; readonly before?: number }) =>
      db.use((sql) =>
        sql<Row>`
          SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source, payload,
                 ${sql.literal(utcText("received_at"))} AS received_at
          FROM events
          WHERE true
            ${options.topic !== undefined ? sql`AND topic = ${options.topic}` : sql``}
            ${options.before !== undefined ? sql`AND seq < ${options.before}` : sql``}
          ORDER BY seq DESC
          LIMIT ${options.limit}`
      ).pipe(Effect.map((rows) => rows.map(toStored)), Effect.withSpan("EventStore.list"))

    /**
     * Like `list`, within about `maxBytes` of payload (and at least one event): the sizes are read first,
     * a few rows at a time, so an oversized listing never leaves the database. A payload's size is its
     * decompressed jsonb size (`|| '{}'` builds it in memory), several times cheaper than rendering it
     * as text; it matches the JSON text closely except for strings full of escapes, which it undercounts. `more` tells whether older
     * events may follow (continue with `before` = the last seq).
     */
    const page = (options: { readonly topic?: string; readonly limit: number; readonly before?: number; readonly maxBytes: number }) =>
      db.use((sql) =>
        Effect.gen(function*() {
          const filter = sql`
            ${options.topic !== undefined ? sql`AND topic = ${options.topic}` : sql``}`
          let total = 0
          let upTo: number | undefined = options.before
          let first: number | undefined
          let last: number | undefined
          let cut = false
          let counted = 0
          // Small steps, sized by what is left of the budget at the average size so far: reading sizes
          // detoasts the payloads, so it reads little more than the page will hold.
          for (let step = 32; counted < options.limit && !cut; step = Math.ceil(1.25 * (options.maxBytes - total) / (total / counted)) + 1) {
            const want = Math.min(step, options.limit - counted)
            const sizes = yield* sql<{ seq: string | number; size: number }>`
              SELECT seq, coalesce(pg_column_size(payload || '{}'::jsonb), 0) + 256 AS size FROM events
              WHERE true ${filter} ${upTo !== undefined ? sql`AND seq < ${upTo}` : sql``}
              ORDER BY seq DESC LIMIT ${want}`
            for (const row of sizes) {
              if (counted > 0 && total + Number(row.size) > options.maxBytes) {
                cut = true
                break
              }
              total += Number(row.size)
              counted++
              last = Number(row.seq)
              first ??= last
            }
            if (sizes.length < want) break
            upTo = last
          }
          if (first === undefined || last === undefined) return { events: [] as Array<StoredEvent>, more: false }
          const rows = yield* sql<Row>`
            SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source, payload,
                   ${sql.literal(utcText("received_at"))} AS received_at
            FROM events
            WHERE seq <= ${first} AND seq >= ${last} ${filter}
            ORDER BY seq DESC`
          return { events: rows.map(toStored), more: cut || counted === options.limit }
        })
      ).pipe(Effect.withSpan("EventStore.page"))

    const get = (topic: string, eventId: string) =>
      db.use((sql) =>
        sql<Row>`
          SELECT seq, topic, event_id, ${sql.literal(utcText(`"timestamp"`))} AS "timestamp", source, payload,
                 ${sql.literal(utcText("received_at"))} AS received_at
          FROM events WHERE topic = ${topic} AND event_id = ${eventId}`
      ).pipe(Effect.map((rows) => rows.length === 0 ? undefined : toStored(rows[0])), Effect.withSpan("EventStore.get"))

    const totalRows = db.use((sql) => sql<{ total: string }>`SELECT coalesce(sum(total), 0)::int8 AS total FROM event_totals`)
      .pipe(Effect.map((rows) => Number(rows[0]?.total ?? 0)), Effect.withSpan("EventStore.totalRows"))

    return { insertMany, list, page, get, totalRows } as const
  }),
  dependencies: [Database.Default]
}) {}
