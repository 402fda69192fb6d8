import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import pg from "pg"
import { aggregatorLayer, postJson, TestAggregator, waitFor, event, promise, unique } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { adminUrl, query } from "../../support/database.js"
import { until } from "../../support/live.js"
import { parseExposition, valueOf } from "../../support/prometheus.js"

// Failures while serving and configured limits, over real HTTP on real PostgreSQL. Each group runs its own
// aggregator on its own fresh database, since most of them break or stall that database on purpose.


interface Answer {
  readonly status: number
  readonly retryAfter: string | null
  readonly body: any
}

const answer = async (res: Response): Promise<Answer> => {
  const text = await res.text()
  let body: unknown = text
  try {
    body = JSON.parse(text)
  } catch {
    // left as text: the assertions on `body` then fail and show it
  }
  return { status: res.status, retryAfter: res.headers.get("retry-after"), body }
}

const post = (url: string, body: unknown) => postJson(url, body).then(answer)
const get = (url: string) => fetch(url).then(answer)

/** The 503 every route answers when the database cannot serve it. */
const expectUnavailable = (a: Answer, what: string) => {
  expect(a.status, what).toBe(503)
  expect(a.body, what).toMatchObject({ error: "storage_unavailable", message: expect.any(String) })
  expect(a.retryAfter, what).toMatch(/^\d+$/)
}

const stats = (url: string) => promise(() => get(`${url}/stats`).then((a) => a.body))

const scrape = (url: string) => promise(() => fetch(`${url}/metrics`).then((r) => r.text()).then(parseExposition))

const rowsOf = (databaseUrl: string, topic: string) =>
  promise(() =>
    query<{ event_id: string }>(databaseUrl, "SELECT event_id FROM events WHERE topic = $1 ORDER BY event_id", [topic])
      .then((rows) => rows.map((r) => r.event_id))
  )

/** A connection of the test's own, closed (rolling back whatever it left open) when the test ends. */
const connection = (url: string) =>
  Effect.acquireRelease(
    promise(async () => {
      const client = new pg.Client({ connectionString: url })
      await client.connect()
      return client
    }),
    (client) => promise(() => client.query("ROLLBACK").catch(() => {}).then(() => client.end()))
  )

const sqlOn = (client: pg.Client, text: string, values: Array<unknown> = []) => promise(() => client.query(text, values))

/**
 * A trigger that makes every insert of an event whose id matches `pattern` (LIKE) raise while the flag row
 * in `fail_writes` is on, so the writer's whole transaction really rolls back. `setFlag` turns it on or off.
 */
const failureTrigger = (databaseUrl: string, pattern: string) =>
  Effect.gen(function*() {
    const client = yield* connection(databaseUrl)
    yield* sqlOn(client, "CREATE TABLE fail_writes (active boolean NOT NULL)")
    yield* sqlOn(client, "INSERT INTO fail_writes VALUES (false)")
    yield* sqlOn(client, `
      CREATE FUNCTION fail_when_flagged() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.event_id LIKE TG_ARGV[0] AND (SELECT active FROM fail_writes) THEN
          RAISE EXCEPTION 'injected failure for %', NEW.event_id;
        END IF;
        RETURN NEW;
      END $$`)
    yield* sqlOn(client, `
      CREATE TRIGGER fail_when_flagged BEFORE INSERT ON events
      FOR EACH ROW EXECUTE FUNCTION fail_when_flagged('${pattern.replace(/'/g, "''")}')`)
    return { setFlag: (on: boolean) => sqlOn(client, "UPDATE fail_writes SET active = $1", [on]) }
  })

const ready = (url: string) => promise(() => waitFor(`${url}/ready`))

const sequence = (n: number) => Array.from({ length: n }, (_, i) => i)

describe.skipIf(skipWithoutPostgres)(`serving through failures and limits${withoutPostgresNote}`, () => {
  layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })(
    "the database goes away while serving",
    (it) => {
      it.scoped("503 with Retry-After while it is gone, nothing unacknowledged stored, and back without a restart", () =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* TestAggregator
          yield* ready(url)
          const name = new URL(databaseUrl).pathname.slice(1)
          const topic = unique("outage")
          expect((yield* promise(() => post(`${url}/publish`, event(topic, "before")))).status).toBe(201)
          const before = yield* stats(url)

          // The shared server stays up: only this database refuses connections, and its sessions are ended.
          const admin = yield* connection(adminUrl)
          const allowConnections = (allow: boolean) => sqlOn(admin, `ALTER DATABASE ${name} WITH ALLOW_CONNECTIONS ${allow}`)
          yield* Effect.acquireRelease(allowConnections(false), () => allowConnections(true))
          yield* sqlOn(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name])

          const single = yield* promise(() => post(`${url}/publish`, event(topic, "during")))
          expectUnavailable(single, "POST /publish")
          const again = yield* promise(() => post(`${url}/publish`, event(topic, "before")))
          expectUnavailable(again, "POST /publish of a stored event")
          const batchEvents = [event(topic, "b1"), event(topic, "b2"), event(topic, "before"), event(topic, "b1")]
          const batch = yield* promise(() => post(`${url}/publish/batch`, { events: batchEvents }))
          expectUnavailable(batch, "POST /publish/batch")
          expectUnavailable(yield* promise(() => get(`${url}/events?topic=${topic}`)), "GET /events")
          expectUnavailable(yield* promise(() => get(`${url}/events/${topic}/before`)), "GET /events/{topic}/{event_id}")

          const notReady = yield* promise(() => get(`${url}/ready`))
          expect(notReady.status).toBe(503)
          expect(notReady.body).toMatchObject({ error: "not_ready", reason: expect.any(String) })
          expect(notReady.body.reason).not.toBe("")
          const alive = yield* promise(() => get(`${url}/`))
          expect(alive.status).toBe(200)
          expect(alive.body).toMatchObject({ status: "alive", service: "aggregator" })

          // /stats still answers; the stored total cannot be read, so it is null rather than a guess
          const during = yield* stats(url)
          expect(during.database_total_rows).toBeNull()
          // a 503 is no outcome: the counters do not move, the failed writes are counted apart
          expect(during.uptime_stats).toEqual(before.uptime_stats)
          expect(during.storage_failures - before.storage_failures).toBe(1 + 1 + 3)

          yield* allowConnections(true)
          // nothing acknowledged was lost, nothing refused was stored
          expect(yield* rowsOf(databaseUrl, topic)).toEqual(["before"])
          yield* ready(url)
          expect((yield* promise(() => get(`${url}/ready`))).body).toEqual({ status: "ready", database: "postgresql" })

          const resent = yield* promise(() => post(`${url}/publish`, event(topic, "during")))
          expect(resent.status).toBe(201)
          expect(resent.body).toEqual({ status: "processed", id: "during", topic })
          const duplicate = yield* promise(() => post(`${url}/publish`, event(topic, "before")))
          expect(duplicate.status).toBe(200)
          expect(duplicate.body.status).toBe("dropped_duplicate")
          const batchAgain = yield* promise(() => post(`${url}/publish/batch`, { events: batchEvents }))
          expect(batchAgain.status).toBe(200)
          expect(batchAgain.body).toMatchObject({ received: 4, processed: 2, duplicates: 2, rejected: 0 })
          expect(batchAgain.body.results.map((r: any) => r.status)).toEqual(
            ["processed", "processed", "dropped_duplicate", "dropped_duplicate"]
          )
          expect((yield* promise(() => get(`${url}/events/${topic}/during`))).status).toBe(200)
          expect(yield* rowsOf(databaseUrl, topic)).toEqual(["b1", "b2", "before", "during"])

          const after = yield* stats(url)
          expect(after.database_total_rows - before.database_total_rows).toBe(3)
          const s = after.uptime_stats
          expect(s.received).toBe(s.unique_processed + s.duplicate_dropped + s.rejected)
          expect(s.unique_processed - before.uptime_stats.unique_processed).toBe(3)
        }))
    }
  )

  layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })(
    "a flush that fails",
    (it) => {
      it.scoped("answers 503 to every member and stores nothing; the same requests succeed once it can commit", () =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* TestAggregator
          yield* ready(url)
          const trigger = yield* failureTrigger(databaseUrl, "%")
          const topic = unique("flush")
          expect((yield* promise(() => post(`${url}/publish`, event(topic, "stored")))).status).toBe(201)
          const before = yield* stats(url)

          const singles = sequence(50).map((i) => event(topic, `s${i}`))
          // new events, an already stored one, a repeat inside the batch and an invalid one
          const batch = [
            ...sequence(20).map((i) => event(topic, `b${i}`)),
            event(topic, "stored"),
            event(topic, "b0"),
            { topic, event_id: "bad" }
          ]
          const sendAll = () =>
            Promise.all([
              ...singles.map((e) => post(`${url}/publish`, e)),
              post(`${url}/publish`, event(topic, "stored")),
              post(`${url}/publish/batch`, { events: batch })
            ])

          yield* trigger.setFlag(true)
          const failed = yield* promise(sendAll)
          failed.forEach((a, i) => expectUnavailable(a, `request ${i}`))
          expect(yield* rowsOf(databaseUrl, topic)).toEqual(["stored"])
          const during = yield* stats(url)
          expect(during.database_total_rows).toBe(before.database_total_rows)
          expect(during.uptime_stats).toEqual(before.uptime_stats)
          // 50 singles, the stored one sent again, and the batch's 21 distinct valid events
          expect(during.storage_failures - before.storage_failures).toBe(50 + 1 + 21)

          yield* trigger.setFlag(false)
          const retried = yield* promise(sendAll)
          expect(retried.slice(0, 50).map((a) => a.status)).toEqual(singles.map(() => 201))
          expect(retried[50].status).toBe(200)
          expect(retried[50].body.status).toBe("dropped_duplicate")
          const batchResult = retried[51]
          expect(batchResult.status).toBe(200)
          expect(batchResult.body).toMatchObject({ received: 23, processed: 20, duplicates: 2, rejected: 1 })
          const stored = yield* rowsOf(databaseUrl, topic)
          expect(stored.length).toBe(1 + 50 + 20)
          const after = yield* stats(url)
          expect(after.database_total_rows - before.database_total_rows).toBe(70)
          const s = after.uptime_stats
          expect(s.received).toBe(s.unique_processed + s.duplicate_dropped + s.rejected)
          expect(s.unique_processed - before.uptime_stats.unique_processed).toBe(70)
          expect(s.duplicate_dropped - before.uptime_stats.duplicate_dropped).toBe(3)
          expect(s.rejected - before.uptime_stats.rejected).toBe(1)
          expect(after.storage_failures).toBe(during.storage_failures)
        }))
    }
  )

  const cap = 50
  layer(aggregatorLayer({ MAX_PENDING_EVENTS: String(cap) }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })("pending events are capped", (it) => {
    it.scoped("past MAX_PENDING_EVENTS a request gets 429 with Retry-After; the admitted ones are stored once the writer moves", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const topic = unique("cap")
        // The writer stalls on the lock: nothing it was given can finish, so nothing leaves the pending count.
        const locker = yield* connection(databaseUrl)
        yield* sqlOn(locker, "BEGIN")
        yield* sqlOn(locker, "LOCK TABLE events IN ACCESS EXCLUSIVE MODE")

        const total = 4 * cap
        const settled = new Map<number, Answer>()
        const inFlight = sequence(total).map((i) =>
          post(`${url}/publish`, event(topic, `e${i}`)).then((a) => {
            settled.set(i, a)
            return a
          })
        )
        yield* promise(() => until(`${total - cap} answers while the writer is stalled`, () => settled.size >= total - cap))
        const early = [...settled.values()]
        expect(early.map((a) => a.status)).toEqual(early.map(() => 429))
        for (const a of early) {
          expect(a.retryAfter).toMatch(/^\d+$/)
          expect(a.body).toMatchObject({ error: "overloaded", message: expect.any(String) })
        }
        expect(valueOf(yield* scrape(url), "aggregator_pending_events")).toBe(cap)
        const batch = yield* promise(() => post(`${url}/publish/batch`, [event(topic, "batch-1"), event(topic, "batch-2")]))
        expect(batch.status).toBe(429)
        expect(batch.retryAfter).toMatch(/^\d+$/)
        expect(batch.body.error).toBe("overloaded")
        expect(settled.size).toBe(total - cap)

        yield* sqlOn(locker, "COMMIT")
        const answers = yield* promise(() => Promise.all(inFlight))
        const admitted = sequence(total).filter((i) => answers[i].status !== 429)
        expect(admitted.length).toBe(cap)
        for (const i of admitted) expect(answers[i].status, `e${i}`).toBe(201)
        expect(yield* rowsOf(databaseUrl, topic)).toEqual(admitted.map((i) => `e${i}`).sort())
        expect(valueOf(yield* scrape(url), "aggregator_pending_events")).toBe(0)
        const s = (yield* stats(url)).uptime_stats
        expect(s.received).toBe(s.unique_processed + s.duplicate_dropped + s.rejected)
      }))
  })

  const maxBody = 2048
  const maxBatch = 5
  const maxPayload = 100
  layer(
    aggregatorLayer({
      MAX_BODY_BYTES: String(maxBody),
      MAX_BATCH_EVENTS: String(maxBatch),
      MAX_PAYLOAD_BYTES: String(maxPayload)
    }),
    { excludeTestServices: true, timeout: "60 seconds" }
  )("configured limits", (it) => {
    /** An event whose JSON is exactly `bytes` long, padded in a field the service ignores. */
    const sized = (topic: string, id: string, bytes: number) => {
      const bare = JSON.stringify({ ...event(topic, id), pad: "" })
      expect(bytes).toBeGreaterThanOrEqual(bare.length)
      const text = JSON.stringify({ ...event(topic, id), pad: "x".repeat(bytes - bare.length) })
      expect(Buffer.byteLength(text)).toBe(bytes)
      return text
    }
    /** A payload whose JSON is exactly `bytes` long. */
    const payloadOf = (bytes: number) => "x".repeat(bytes - 2)

    it.effect("MAX_BODY_BYTES: at the limit accepted, one byte over 413, with or without a Content-Length", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const topic = unique("body")
        const over = yield* promise(() => post(`${url}/publish`, sized(topic, "over", maxBody + 1)))
        expect(over.status).toBe(413)
        expect(over.body).toMatchObject({ error: "payload_too_large", limit: maxBody })
        // streamed, so the limit is found while reading rather than from the header
        const chunked = yield* promise(() => {
          const bytes = new TextEncoder().encode(sized(topic, "chunked", maxBody + 1))
          const body = new ReadableStream({
            start(c) {
              c.enqueue(bytes.slice(0, 1000))
              c.enqueue(bytes.slice(1000))
              c.close()
            }
          })
          return fetch(`${url}/publish`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body,
            duplex: "half"
          } as RequestInit).then(answer)
        })
        expect(chunked.status).toBe(413)
        expect(chunked.body).toMatchObject({ error: "payload_too_large", limit: maxBody })
        const batchOver = yield* promise(() =>
          post(`${url}/publish/batch`, `{"events":[${sized(topic, "batch-over", maxBody - 12)}]}`)
        )
        expect(batchOver.status).toBe(413)
        expect(batchOver.body.error).toBe("payload_too_large")
        expect(yield* rowsOf(databaseUrl, topic)).toEqual([])

        const at = yield* promise(() => post(`${url}/publish`, sized(topic, "at", maxBody)))
        expect(at.status).toBe(201)
        const batchAt = yield* promise(() =>
          post(`${url}/publish/batch`, `{"events":[${sized(topic, "batch-at", maxBody - 13)}]}`)
        )
        expect(batchAt.status).toBe(200)
        expect(batchAt.body.processed).toBe(1)
        expect(yield* rowsOf(databaseUrl, topic)).toEqual(["at", "batch-at"])
      }))

    it.effect("MAX_BATCH_EVENTS: one over is 413 and stores none of them; at the limit all are stored", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const topic = unique("count")
        const over = yield* promise(() =>
          post(`${url}/publish/batch`, { events: sequence(maxBatch + 1).map((i) => event(topic, `o${i}`)) })
        )
        expect(over.status).toBe(413)
        expect(over.body).toMatchObject({ error: "payload_too_large", limit: maxBatch })
        const bare = yield* promise(() => post(`${url}/publish/batch`, sequence(maxBatch + 1).map((i) => event(topic, `o${i}`))))
        expect(bare.status).toBe(413)
        expect(yield* rowsOf(databaseUrl, topic)).toEqual([])
        const at = yield* promise(() =>
          post(`${url}/publish/batch`, { events: sequence(maxBatch).map((i) => event(topic, `a${i}`)) })
        )
        expect(at.status).toBe(200)
        expect(at.body).toMatchObject({ received: maxBatch, processed: maxBatch })
        expect(yield* rowsOf(databaseUrl, topic)).toEqual(sequence(maxBatch).map((i) => `a${i}`))
      }))

    it.effect("MAX_PAYLOAD_BYTES: one byte over is 422 on the payload path; at the limit accepted", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const topic = unique("payload")
        const over = yield* promise(() => post(`${url}/publish`, event(topic, "over", { payload: payloadOf(maxPayload + 1) })))
        expect(over.status).toBe(422)
        expect(over.body.error).toBe("validation_failed")
        expect(over.body.issues.map((i: any) => i.path)).toEqual(["payload"])
        // multi-byte characters count as their UTF-8 bytes: 34 × "€" is 102 bytes as JSON
        const wide = yield* promise(() => post(`${url}/publish`, event(topic, "wide", { payload: "€".repeat(34) })))
        expect(wide.status).toBe(422)
        expect(wide.body.issues.map((i: any) => i.path)).toEqual(["payload"])
        const batch = yield* promise(() =>
          post(`${url}/publish/batch`, [
            event(topic, "batch-over", { payload: payloadOf(maxPayload + 1) }),
            event(topic, "batch-at", { payload: payloadOf(maxPayload) })
          ])
        )
        expect(batch.status).toBe(200)
        expect(batch.body).toMatchObject({ received: 2, processed: 1, rejected: 1 })
        expect(batch.body.results[0]).toMatchObject({ status: "rejected", event_id: "batch-over" })
        expect(batch.body.results[0].errors.map((e: any) => e.path)).toEqual(["payload"])
        expect(batch.body.results[1].status).toBe("processed")
        const at = yield* promise(() => post(`${url}/publish`, event(topic, "at", { payload: payloadOf(maxPayload) })))
        expect(at.status).toBe(201)
        expect(yield* rowsOf(databaseUrl, topic)).toEqual(["at", "batch-at"])
        const stored = yield* promise(() => get(`${url}/events/${topic}/at`))
        expect(stored.body.payload).toBe(payloadOf(maxPayload))
      }))
  })

  const chunk = 100
  layer(aggregatorLayer({ FLUSH_MAX_EVENTS: String(chunk) }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })("batches larger than one flush", (it) => {
    it.effect("a 1,000-event batch is one flush of its own, written in statements, and every item is reported right", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const topic = unique("split")
        // keys k0..k899, of which every 30th is already stored, then k0..k99 again in the same batch
        const preStored = sequence(900).filter((i) => i % 30 === 0)
        const pre = yield* promise(() => post(`${url}/publish/batch`, preStored.map((i) => event(topic, `k${i}`))))
        expect(pre.body.processed).toBe(preStored.length)
        const before = yield* stats(url)
        const flushesBefore = valueOf(yield* scrape(url), "aggregator_batch_size_events_count")

        const items = sequence(1000).map((i) => event(topic, `k${i % 900}`))
        const res = yield* promise(() => post(`${url}/publish/batch`, { events: items }))
        expect(res.status).toBe(200)
        expect(res.body).toMatchObject({ received: 1000, processed: 900 - 30, duplicates: 30 + 100, rejected: 0 })
        expect(res.body.results.length).toBe(1000)
        res.body.results.forEach((r: any, i: number) => {
          const expected = i < 900 && i % 30 !== 0 ? "processed" : "dropped_duplicate"
          expect(r, `item ${i}`).toEqual({ index: i, topic, event_id: `k${i % 900}`, status: expected })
        })

        const counts = yield* promise(() =>
          query(databaseUrl, "SELECT count(*)::int AS n, count(DISTINCT event_id)::int AS d FROM events WHERE topic = $1", [topic])
        )
        expect(counts[0]).toEqual({ n: 900, d: 900 })
        const metrics = yield* scrape(url)
        // the 1,000 events went as one flush (one transaction), not as FLUSH_MAX_EVENTS-sized pieces
        expect(valueOf(metrics, "aggregator_batch_size_events_count") - flushesBefore).toBe(1)
        const after = yield* stats(url)
        expect(after.database_total_rows - before.database_total_rows).toBe(870)
        expect(after.uptime_stats.unique_processed - before.uptime_stats.unique_processed).toBe(870)
        expect(after.uptime_stats.duplicate_dropped - before.uptime_stats.duplicate_dropped).toBe(130)
      }))

    it.scoped("when a batch larger than one flush fails, none of it is stored and the counters stay honest", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* ready(url)
        const trigger = yield* failureTrigger(databaseUrl, "poison%")
        const topic = unique("partial")
        // one poisoned item among 1,000; rows go in key order, so it is in the last of ten statements
        const items = sequence(1000).map((i) => event(topic, i === 550 ? "poison" : `k${i}`))
        const before = yield* stats(url)

        yield* trigger.setFlag(true)
        const failed = yield* promise(() => post(`${url}/publish/batch`, { events: items }))
        expectUnavailable(failed, "the large batch")
        yield* promise(() =>
          until("the writer to finish", async () =>
            valueOf(parseExposition(await (await fetch(`${url}/metrics`)).text()), "aggregator_pending_events") === 0)
        )
        // The nine statements before the poisoned one ran, but their transaction rolled back with it.
        expect(yield* rowsOf(databaseUrl, topic)).toEqual([])
        const during = yield* stats(url)
        expect(during.database_total_rows).toBe(before.database_total_rows)
        expect(during.uptime_stats).toEqual(before.uptime_stats)
        expect(during.storage_failures - before.storage_failures).toBe(1000)

        yield* trigger.setFlag(false)
        const retried = yield* promise(() => post(`${url}/publish/batch`, { events: items }))
        expect(retried.status).toBe(200)
        expect(retried.body).toMatchObject({ received: 1000, processed: 1000, duplicates: 0, rejected: 0 })
        expect((yield* rowsOf(databaseUrl, topic)).length).toBe(1000)
        const after = yield* stats(url)
        expect(after.database_total_rows - before.database_total_rows).toBe(1000)
        const s = after.uptime_stats
        expect(s.received).toBe(s.unique_processed + s.duplicate_dropped + s.rejected)
      }))
  })

  layer(aggregatorLayer({ ACCEPT_UNTYPED_BODIES: "true" }), { excludeTestServices: true, timeout: "60 seconds" })(
    "ACCEPT_UNTYPED_BODIES",
    (it) => {
      it.effect("reads a body without Content-Type as JSON, as the replaced service did; other types are still 415", () =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* TestAggregator
          yield* ready(url)
          const topic = unique("untyped")
          // a byte body: fetch adds no content type for it, as Python's requests.post(data=...) sends none
          const untyped = (path: string, body: unknown) =>
            promise(() => fetch(`${url}${path}`, { method: "POST", body: new TextEncoder().encode(JSON.stringify(body)) }))
          const one = yield* untyped("/publish", event(topic, "a"))
          expect(one.headers.get("content-type") ?? "").toContain("application/json")
          expect(one.status).toBe(201)
          expect((yield* untyped("/publish/batch", [event(topic, "b"), event(topic, "a")])).status).toBe(200)
          const typed = yield* promise(() => postJson(`${url}/publish`, event(topic, "c"), { headers: { "content-type": "text/plain" } }))
          expect(typed.status).toBe(415)
          expect(yield* rowsOf(databaseUrl, topic)).toEqual(["a", "b"])
        }))
    }
  )
})
