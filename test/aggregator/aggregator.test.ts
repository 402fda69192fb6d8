import { describe, expect, layer } from "@effect/vitest"
import { Effect, FastCheck as fc, Schema } from "effect"
import {
  MethodNotAllowed,
  NotFound,
  NotReady,
  Overloaded,
  PayloadTooLarge,
  StorageUnavailable,
  Unauthorized,
  UnsupportedMediaType,
  ValidationFailed
} from "../../src/domain/Errors.js"
import {
  Alive,
  BatchInput,
  BatchResult,
  DroppedDuplicate,
  EventInput,
  Processed,
  Ready,
  Stats,
  EventId,
  Source,
  StoredEvent,
  TopicSummary,
  Timestamp,
  Topic
} from "../../src/domain/Event.js"
import { aggregatorLayer, postJson, TestAggregator, event, promise, unique } from "../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { query } from "../support/database.js"


const stats = (url: string) => promise(() => fetch(`${url}/stats`).then((r) => r.json() as Promise<any>))

describe.skipIf(skipWithoutPostgres)(`aggregator over HTTP${withoutPostgresNote}`, () => {
layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("aggregator over PostgreSQL", (it) => {
  it.effect("GET / says alive and GET /ready says ready once migrated", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const alive = yield* promise(() => fetch(`${url}/`))
      expect(alive.status).toBe(200)
      expect(yield* promise(() => alive.json())).toMatchObject({ status: "alive", service: "aggregator" })
      // readiness is reached in the background; poll briefly
      let ready = yield* promise(() => fetch(`${url}/ready`))
      for (let i = 0; i < 50 && ready.status !== 200; i++) {
        yield* Effect.sleep("100 millis")
        ready = yield* promise(() => fetch(`${url}/ready`))
      }
      expect(ready.status).toBe(200)
      expect(yield* promise(() => ready.json())).toEqual({ status: "ready", database: "postgresql" })
    }))

  it.effect("POST /publish: 201 the first time, 200 dropped_duplicate after; another topic is another event", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const topic = unique("orders")
      const first = yield* promise(() => postJson(`${url}/publish`, event(topic, "e1")))
      expect(first.status).toBe(201)
      expect(yield* promise(() => first.json())).toEqual({ status: "processed", id: "e1", topic })
      const again = yield* promise(() => postJson(`${url}/publish`, event(topic, "e1")))
      expect(again.status).toBe(200)
      expect(yield* promise(() => again.json())).toEqual({ status: "dropped_duplicate", id: "e1", topic })
      const other = yield* promise(() => postJson(`${url}/publish`, event(`${topic}-other`, "e1")))
      expect(other.status).toBe(201)
      const rows = yield* promise(() =>
        query(databaseUrl, "SELECT topic FROM events WHERE event_id = 'e1' AND topic LIKE $1", [`${topic}%`])
      )
      expect(rows.length).toBe(2)
    }))

  it.effect("200 concurrent POSTs of one event: exactly one 201 and one row", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const topic = unique("race")
      const statuses = yield* promise(() =>
        Promise.all(Array.from({ length: 200 }, () => postJson(`${url}/publish`, event(topic, "same")).then((r) => r.status)))
      )
      expect(statuses.filter((s) => s === 201).length).toBe(1)
      expect(statuses.filter((s) => s === 200).length).toBe(199)
      const rows = yield* promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]))
      expect(rows[0].n).toBe(1)
    }))

  it.effect("a mixed batch: valid, invalid, in-batch duplicate and already stored, each reported right", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const topic = unique("batch")
      expect((yield* promise(() => postJson(`${url}/publish`, event(topic, "old")))).status).toBe(201)
      const res = yield* promise(() =>
        postJson(`${url}/publish/batch`, {
          events: [
            event(topic, "a"),
            { topic, timestamp: "nope" },
            event(topic, "a"),
            event(topic, "old"),
            event(topic, "b", { payload: { nested: [1, { x: "y" }] }, source: "s" })
          ]
        })
      )
      expect(res.status).toBe(200)
      const body: any = yield* promise(() => res.json())
      expect(body).toMatchObject({ received: 5, processed: 2, duplicates: 2, rejected: 1 })
      expect(body.results.map((r: any) => r.status)).toEqual([
        "processed",
        "rejected",
        "dropped_duplicate",
        "dropped_duplicate",
        "processed"
      ])
      expect(body.results[1].errors.map((e: any) => e.path).sort()).toEqual(["event_id", "timestamp"])
      const rows = yield* promise(() =>
        query(databaseUrl, "SELECT event_id FROM events WHERE topic = $1 ORDER BY event_id", [topic])
      )
      expect(rows.map((r) => r.event_id)).toEqual(["a", "b", "old"])
    }))

  it.effect("a bare JSON array is a batch too", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const topic = unique("bare")
      const res = yield* promise(() => postJson(`${url}/publish/batch`, [event(topic, "1"), event(topic, "2")]))
      expect(res.status).toBe(200)
      expect(yield* promise(() => res.json())).toMatchObject({ received: 2, processed: 2 })
    }))

  it.effect("422 for every validation failure, listing all failing fields, storing nothing", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const topic = unique("bad")
      const cases: Array<[unknown, Array<string>]> = [
        [{}, ["topic", "event_id", "timestamp"]],
        [{ topic, event_id: "x" }, ["timestamp"]],
        [{ topic: 5, event_id: [], timestamp: "2025-01-01T00:00:00Z" }, ["topic", "event_id"]],
        [event("", "x"), ["topic"]],
        [event("a".repeat(256), "x"), ["topic"]],
        [event("bad\ntopic", "x"), ["topic"]],
        [event(topic, "nul\u0000"), ["event_id"]],
        [event(topic, "x", { timestamp: "2025-02-30T00:00:00Z" }), ["timestamp"]],
        [event(topic, "x", { timestamp: "yesterday" }), ["timestamp"]],
        [event(topic, "x", { source: 7 }), ["source"]],
        [event(topic, "x", { payload: { s: "a\u0000b" } }), ["payload"]],
        [event(topic, "x", { payload: "x".repeat(70_000) }), ["payload"]],
        [[event(topic, "x")], [""]],
        [null, [""]]
      ]
      for (const [body, paths] of cases) {
        const res = yield* promise(() => postJson(`${url}/publish`, JSON.stringify(body)))
        expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(422)
        const json: any = yield* promise(() => res.json())
        expect(json.error).toBe("validation_failed")
        expect(json.issues.map((i: any) => i.path).sort()).toEqual([...paths].sort())
      }
      const duplicated = `{"topic":"${topic}","event_id":"d1","event_id":"d2","timestamp":"2025-01-01T00:00:00Z"}`
      for (const raw of ["not json", "", "{\"topic\":", "\"just a string\"", duplicated]) {
        const res = yield* promise(() => postJson(`${url}/publish`, raw))
        expect(res.status, raw).toBe(422)
        expect(((yield* promise(() => res.json())) as any).error).toBe("validation_failed")
      }
      const rows = yield* promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]))
      expect(rows[0].n).toBe(0)
    }))

  it.effect("413 for a body over the byte limit or a batch over the count limit; 415 for other content types", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const big = yield* promise(() => postJson(`${url}/publish`, JSON.stringify({ pad: "x".repeat(1024 * 1024) })))
      expect(big.status).toBe(413)
      expect(yield* promise(() => big.json())).toMatchObject({ error: "payload_too_large", limit: 1024 * 1024 })
      const topic = unique("many")
      const many = yield* promise(() =>
        postJson(`${url}/publish/batch`, Array.from({ length: 1001 }, (_, i) => ({ topic, event_id: String(i), timestamp: "2025-01-01T00:00:00Z" })))
      )
      expect(many.status).toBe(413)
      expect(((yield* promise(() => many.json())) as any).error).toBe("payload_too_large")
      const form = yield* promise(() =>
        fetch(`${url}/publish`, { method: "POST", headers: { "content-type": "text/plain" }, body: "{}" })
      )
      expect(form.status).toBe(415)
      expect(((yield* promise(() => form.json())) as any).error).toBe("unsupported_media_type")
    }))

  it.effect("unknown route 404 JSON; known path with the wrong method 405 with Allow", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const missing = yield* promise(() => fetch(`${url}/no/such/route`))
      expect(missing.status).toBe(404)
      expect(((yield* promise(() => missing.json())) as any).error).toBe("not_found")
      const wrong = yield* promise(() => fetch(`${url}/publish`))
      expect(wrong.status).toBe(405)
      expect(wrong.headers.get("allow")).toBe("POST")
      expect(((yield* promise(() => wrong.json())) as any).error).toBe("method_not_allowed")
      const del = yield* promise(() => fetch(`${url}/stats`, { method: "DELETE" }))
      expect(del.status).toBe(405)
      expect(del.headers.get("allow")).toBe("GET")
    }))

  it.effect("GET /events lists newest first, filters by topic, pages with before; GET one by key or 404", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const topic = unique("list")
      for (let i = 0; i < 5; i++) {
        expect((yield* promise(() => postJson(`${url}/publish`, event(topic, `e${i}`, { payload: { i } })))).status).toBe(201)
      }
      const page1: Array<any> = yield* promise(() => fetch(`${url}/events?topic=${topic}&limit=3`).then((r) => r.json() as Promise<Array<any>>))
      expect(page1.map((e) => e.event_id)).toEqual(["e4", "e3", "e2"])
      expect(Object.keys(page1[0]).sort()).toEqual(
        ["event_id", "payload", "received_at", "seq", "source", "timestamp", "topic"]
      )
      const page2: Array<any> = yield* promise(() =>
        fetch(`${url}/events?topic=${topic}&limit=3&before=${page1[2].seq}`).then((r) => r.json() as Promise<Array<any>>)
      )
      expect(page2.map((e) => e.event_id)).toEqual(["e1", "e0"])
      const all: Array<any> = yield* promise(() => fetch(`${url}/events`).then((r) => r.json() as Promise<Array<any>>))
      expect(all.length).toBeLessThanOrEqual(20)
      const one: any = yield* promise(() => fetch(`${url}/events/${topic}/e3`).then((r) => r.json()))
      expect(one).toMatchObject({ topic, event_id: "e3", payload: { i: 3 }, timestamp: "2025-03-04T05:06:07.123456Z", source: null })
      const none = yield* promise(() => fetch(`${url}/events/${topic}/nope`))
      expect(none.status).toBe(404)
      const badLimit = yield* promise(() => fetch(`${url}/events?limit=5000`))
      expect(badLimit.status).toBe(422)
    }))

  it.effect("serves its OpenAPI document (422 for validation, not the framework's 400) and Swagger UI at /docs", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const spec: any = yield* promise(() => fetch(`${url}/openapi.json`).then((r) => r.json()))
      const publish = spec.paths["/publish"].post.responses
      expect(Object.keys(publish).sort()).toEqual(["200", "201", "401", "405", "413", "415", "422", "429", "503"])
      expect(publish["429"].headers["Retry-After"]).toBeDefined()
      expect(publish["503"].headers["Retry-After"]).toBeDefined()
      const resolve = (schema: any): any => schema?.$ref ? spec.components.schemas[schema.$ref.split("/").pop()] : schema
      const examplesOf = (schema: any): ReadonlyArray<unknown> | undefined => {
        const s = resolve(schema)
        if (s?.anyOf !== undefined) {
          const each = s.anyOf.map(examplesOf)
          return each.every((e: unknown) => e !== undefined) ? each.flat() : undefined
        }
        return s?.examples ?? (s?.type === "array" ? examplesOf(s.items) : undefined)
      }
      for (const [path, ops] of Object.entries(spec.paths) as Array<[string, any]>) {
        for (const [method, op] of Object.entries(ops) as Array<[string, any]>) {
          const where = `${method} ${path}`
          expect(op.responses["400"], where).toBeUndefined()
          expect(op.responses["405"]?.headers?.Allow, where).toBeDefined()
          expect(op.responses["422"], where).toBeDefined()
          for (const [status, response] of Object.entries(op.responses) as Array<[string, any]>) {
            expect(response.description, `${where} ${status}`).not.toMatch(/^(Success|Error)$/)
            const json = response.content?.["application/json"]
            if (json !== undefined) expect(examplesOf(json.schema), `${where} ${status} example`).toBeDefined()
          }
          const body = op.requestBody?.content?.["application/json"]
          if (body !== undefined) expect(examplesOf(body.schema), `${where} body example`).toBeDefined()
        }
      }
      // every example is valid for the schema it illustrates
      const schemas: Record<string, Schema.Schema.Any> = {
        EventInput, BatchInput, Processed, DroppedDuplicate, BatchResult, StoredEvent, Stats, Alive, Ready,
        ValidationFailed, PayloadTooLarge, UnsupportedMediaType, MethodNotAllowed, Unauthorized, NotFound,
        Overloaded, StorageUnavailable, NotReady, Topic, EventId, Timestamp, Source, TopicSummary
      }
      for (const [name, component] of Object.entries(spec.components.schemas) as Array<[string, any]>) {
        for (const example of component.examples ?? []) {
          expect(schemas[name], `a schema for the example of ${name}`).toBeDefined()
          expect(() => Schema.decodeUnknownSync(schemas[name] as Schema.Schema<unknown, unknown, never>)(example), name).not.toThrow()
        }
      }
      const docs = yield* promise(() => fetch(`${url}/docs`))
      expect(docs.status).toBe(200)
      expect(docs.headers.get("content-type")).toMatch(/text\/html/)
      // as locked down as the dashboard: the page needs nothing from another origin, so nothing is allowed
      expect(docs.headers.get("content-security-policy")).toMatch(/^default-src 'none';/)
      expect(docs.headers.get("content-security-policy")).toContain("frame-ancestors 'none'")
      expect(docs.headers.get("x-content-type-options")).toBe("nosniff")
      const page = yield* promise(() => docs.text())
      expect(page).not.toMatch(/(?:src|href)=["']?(?:https?:)?\/\//i)
      expect((yield* promise(() => fetch(`${url}/openapi.json`))).headers.get("x-content-type-options")).toBe("nosniff")
    }))

  it.effect("timestamps without an offset are UTC; offsets are converted; microseconds are kept", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const topic = unique("ts")
      const cases: Array<[string, string]> = [
        ["2025-01-02T03:04:05", "2025-01-02T03:04:05.000000Z"],
        ["2025-01-02T03:04:05.000001+02:00", "2025-01-02T01:04:05.000001Z"],
        ["2025-01-02 03:04:05.5Z", "2025-01-02T03:04:05.500000Z"]
      ]
      for (const [i, [input, stored]] of cases.entries()) {
        expect((yield* promise(() => postJson(`${url}/publish`, event(topic, `t${i}`, { timestamp: input })))).status).toBe(201)
        const got: any = yield* promise(() => fetch(`${url}/events/${topic}/t${i}`).then((r) => r.json()))
        expect(got.timestamp).toBe(stored)
      }
    }))

  it.effect("gzip bodies are accepted; a gzip bomb is a 413", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const { gzipSync } = yield* promise(() => import("node:zlib"))
      const topic = unique("gz")
      const ok = yield* promise(() =>
        fetch(`${url}/publish`, {
          method: "POST",
          headers: { "content-type": "application/json", "content-encoding": "gzip" },
          body: gzipSync(JSON.stringify(event(topic, "z")))
        })
      )
      expect(ok.status).toBe(201)
      const bomb = yield* promise(() =>
        fetch(`${url}/publish`, {
          method: "POST",
          headers: { "content-type": "application/json", "content-encoding": "gzip" },
          body: gzipSync(Buffer.alloc(64 * 1024 * 1024, 32))
        })
      )
      expect(bomb.status).toBe(413)
      expect(yield* promise(() => bomb.json())).toMatchObject({ error: "payload_too_large", limit: 1024 * 1024 })
    }))

  it.effect.prop(
    "stats: after any mix of new, duplicate and invalid events the counters match what clients were told",
    [fc.array(fc.record({ key: fc.integer({ min: 0, max: 15 }), valid: fc.boolean(), batch: fc.boolean() }), { minLength: 1, maxLength: 40 })],
    ([ops]) =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        const topic = unique("prop")
        const before: any = yield* stats(url)
        let processed = 0, duplicates = 0, rejected = 0
        const sent = ops.map((op) => op.valid ? event(topic, `k${op.key}`) : { topic, event_id: `k${op.key}` })
        const singles = sent.filter((_, i) => !ops[i].batch)
        const batch = sent.filter((_, i) => ops[i].batch)
        const answers = yield* promise(() =>
          Promise.all([
            ...singles.map((e) => postJson(`${url}/publish`, e).then(async (r) => [r.status, await r.json() as any] as const)),
            batch.length > 0
              ? postJson(`${url}/publish/batch`, { events: batch }).then(async (r) => [r.status, await r.json() as any] as const)
              : Promise.resolve([0, null] as const)
          ])
        )
        for (const [status, body] of answers) {
          if (status === 201) processed++
          else if (status === 422) rejected++
          else if (status === 200 && body.status === "dropped_duplicate") duplicates++
          else if (status === 200 && body.results) {
            processed += body.processed
            duplicates += body.duplicates
            rejected += body.rejected
          }
        }
        const after: any = yield* stats(url)
        const delta = (k: string) => after.uptime_stats[k] - before.uptime_stats[k]
        const s = after.uptime_stats
        expect(s.received).toBe(s.unique_processed + s.duplicate_dropped + s.rejected)
        expect(delta("unique_processed")).toBe(processed)
        expect(delta("duplicate_dropped")).toBe(duplicates)
        expect(delta("rejected")).toBe(rejected)
        expect(delta("received")).toBe(ops.length)
        const distinctValid = new Set(ops.filter((o) => o.valid).map((o) => o.key)).size
        expect(processed).toBe(distinctValid)
        expect(after.database_total_rows - before.database_total_rows).toBe(distinctValid)
        const rows = yield* promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]))
        expect(rows[0].n).toBe(distinctValid)
      }),
    { fastCheck: { numRuns: 25 } }
  )
})
})
