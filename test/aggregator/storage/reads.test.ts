import { FetchHttpClient } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, FastCheck as fc, Layer } from "effect"
import { readFileSync } from "node:fs"
import { makeClient } from "../../../src/client/Client.js"
import type { StoredEvent } from "../../../src/domain/Event.js"
import {
  aggregatorLayer,
  embeddedAggregatorLayer,
  freePort,
  postJson,
  promise,
  spawnAggregator,
  type Spawned,
  TestAggregator,
  unique,
  waitFor
} from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"

// The read side over real HTTP on both backends: GET /topics, the filters of GET /events, GET /events/export.

const server = Effect.tap(TestAggregator, ({ url }) => promise(() => waitFor(`${url}/ready`, 60_000)))
const getJson = (url: string) =>
  promise(async () => {
    const res = await fetch(url)
    return { status: res.status, type: res.headers.get("content-type"), body: await res.json() as any }
  })
const publishAll = (url: string, events: ReadonlyArray<unknown>, perRequest = 500) =>
  promise(async () => {
    for (let i = 0; i < events.length; i += perRequest) {
      const res = await postJson(`${url}/publish/batch`, events.slice(i, i + perRequest))
      if (res.status !== 200) throw new Error(`batch: ${res.status} ${await res.text()}`)
    }
  })
const ndjson = (text: string) => text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as StoredEvent)
const exported = (url: string) =>
  promise(async () => Number(/^aggregator_exported_events_total (\d+)/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0))

// One topic of events spread over a few days and sources, published once per backend; the filters are
// checked against a model of it.
const DAYS = ["2025-03-01", "2025-03-02", "2025-03-03", "2025-03-04"]
const SOURCES = [undefined, "web", "batch"]
const modelEvents = (topic: string) =>
  Array.from({ length: 48 }, (_, i) => ({
    topic,
    event_id: `m${String(i).padStart(2, "0")}`,
    timestamp: `${DAYS[i % 4]}T${String(i % 24).padStart(2, "0")}:00:00Z`,
    ...(SOURCES[i % 3] !== undefined ? { source: SOURCES[i % 3] } : {}),
    payload: { i }
  }))

const filterArb = fc.record({
  source: fc.option(fc.constantFrom("web", "batch", "none"), { nil: undefined }),
  since: fc.option(fc.constantFrom(...DAYS.map((d) => `${d}T06:00:00Z`), "2025-03-02T00:00:00+02:00"), { nil: undefined }),
  until: fc.option(fc.constantFrom(...DAYS.map((d) => `${d}T18:00:00Z`), "2025-03-05T00:00:00.000001Z"), { nil: undefined }),
  before: fc.option(fc.integer({ min: 0, max: 47 }), { nil: undefined }),
  limit: fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined })
}).filter((f) => f.since === undefined || f.until === undefined || Date.parse(f.since) < Date.parse(f.until))

const backends: ReadonlyArray<{ readonly name: string; readonly skip: boolean; readonly layer: Layer.Layer<TestAggregator, unknown> }> = [
  { name: `PostgreSQL server${withoutPostgresNote}`, skip: skipWithoutPostgres, layer: aggregatorLayer({ LIST_MAX_BYTES: "65536" }) },
  { name: "embedded PGlite", skip: false, layer: embeddedAggregatorLayer({ LIST_MAX_BYTES: "65536" }) }
]

for (const backend of backends) {
  describe.skipIf(backend.skip)(`reads on ${backend.name}`, () => {
    layer(backend.layer, { excludeTestServices: true, timeout: "120 seconds" })((it) => {
      it.effect("GET /topics: each topic with its stored count and first/last received_at, in topic order; the client decodes it", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const [a, b] = [unique("topics-a"), unique("topics-b")]
          yield* publishAll(url, [
            { topic: a, event_id: "1", timestamp: "2025-01-01T00:00:00Z" },
            { topic: a, event_id: "2", timestamp: "2025-01-01T00:00:00Z" },
            { topic: a, event_id: "1", timestamp: "2025-01-01T00:00:00Z" },
            { topic: b, event_id: "1", timestamp: "2025-01-01T00:00:00Z" }
          ])
          expect((yield* promise(() => postJson(`${url}/publish`, { topic: a, event_id: "3", timestamp: "2025-01-02T00:00:00Z" }))).status).toBe(201)
          expect((yield* promise(() => postJson(`${url}/publish`, { topic: a, event_id: "2", timestamp: "2025-01-02T00:00:00Z" }))).status).toBe(200)
          const res = yield* getJson(`${url}/topics`)
          expect(res.status).toBe(200)
          expect(res.type).toContain("application/json")
          const names = (res.body as Array<{ topic: string }>).map((t) => t.topic)
          expect(names).toEqual([...names].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0)))
          const listed = (yield* getJson(`${url}/events?topic=${a}`)).body as Array<StoredEvent>
          const received = listed.map((e) => e.received_at).sort()
          const summary = (res.body as Array<any>).find((t) => t.topic === a)
          expect(summary).toEqual({ topic: a, events: 3, first_received_at: received[0], last_received_at: received[2] })
          expect((res.body as Array<any>).find((t) => t.topic === b)?.events).toBe(1)
          const typed = yield* Effect.flatMap(makeClient(url), (client) => client.events.topics()).pipe(Effect.provide(FetchHttpClient.layer))
          expect(typed).toEqual(res.body)
        }))

      const model = unique("model")
      let published = false
      let stored: Array<StoredEvent> = []
      it.effect.prop(
        "since/until/source/before on GET /events and since/until/source on the export select what a model selects",
        [filterArb],
        ([f]) =>
          Effect.gen(function*() {
            const { url } = yield* server
            if (!published) {
              yield* publishAll(url, modelEvents(model))
              stored = ndjson(yield* promise(() => fetch(`${url}/events/export?topic=${model}`).then((r) => r.text())))
              expect(stored.length).toBe(48)
              published = true
            }
            const at = (s: string) => Date.parse(s)
            const before = f.before !== undefined ? stored[f.before].seq : undefined
            const matches = stored.filter((e) =>
              (f.source === undefined || e.source === f.source) &&
              (f.since === undefined || Date.parse(e.timestamp) >= at(f.since)) &&
              (f.until === undefined || Date.parse(e.timestamp) < at(f.until))
            )
            const q = new URLSearchParams({ topic: model })
            if (f.source !== undefined) q.set("source", f.source)
            if (f.since !== undefined) q.set("since", f.since)
            if (f.until !== undefined) q.set("until", f.until)
            const exportRes = yield* promise(() => fetch(`${url}/events/export?${q}`))
            expect(exportRes.status).toBe(200)
            expect(exportRes.headers.get("content-type")).toContain("application/x-ndjson")
            expect(ndjson(yield* promise(() => exportRes.text()))).toEqual(matches)
            if (before !== undefined) q.set("before", String(before))
            if (f.limit !== undefined) q.set("limit", String(f.limit))
            const page = yield* getJson(`${url}/events?${q}`)
            expect(page.status).toBe(200)
            const expected = matches.filter((e) => before === undefined || e.seq < before).reverse().slice(0, f.limit ?? 20)
            expect(page.body).toEqual(expected)
          }),
        { fastCheck: { numRuns: 25 } }
      )

      it.effect("invalid filters are a 422 with a JSON error naming the parameter, on the listing and the export", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const cases: Array<[string, string]> = [
            ["since=yesterday", "since"],
            ["until=2025-13-01T00:00:00Z", "until"],
            ["since=2025-03-02T00:00:00Z&until=2025-03-01T00:00:00Z", "until"],
            ["since=2025-03-01T00:00:00Z&until=2025-03-01T00:00:00Z", "until"],
            [`source=${"s".repeat(256)}`, "source"]
          ]
          for (const path of ["/events", "/events/export"]) {
            for (const [params, name] of cases) {
              const res = yield* getJson(`${url}${path}?topic=t&${params}`)
              expect(res.status, `${path}?${params}`).toBe(422)
              expect(res.type).toContain("application/json")
              expect(res.body.issues.some((i: { path: string }) => i.path === name), JSON.stringify(res.body)).toBe(true)
            }
          }
          // the new routes take GET only, like the other reads
          const post = yield* promise(() => fetch(`${url}/events/export`, { method: "POST" }))
          expect(post.status).toBe(405)
          expect(post.headers.get("allow")).toContain("GET")
          expect((yield* promise(() => fetch(`${url}/topics`, { method: "DELETE" }))).status).toBe(405)
        }))

      it.effect("the export streams every event in order; a client that stops reading holds it back, one that leaves stops it", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const topic = unique("export")
          const blob = "e".repeat(16_000)
          const count = 1200
          yield* publishAll(url, Array.from({ length: count }, (_, i) => ({ topic, event_id: `x${i}`, timestamp: "2025-01-01T00:00:00Z", payload: { i, blob } })), 50)
          const all = ndjson(yield* promise(() => fetch(`${url}/events/export?topic=${topic}`).then((r) => r.text())))
          expect(all.map((e) => e.event_id).sort()).toEqual(Array.from({ length: count }, (_, i) => `x${i}`).sort())
          for (let i = 1; i < all.length; i++) expect(all[i].seq).toBeGreaterThan(all[i - 1].seq)

          // ~19 MB to send in chunks of ~64 KB: a reader that takes one chunk and waits is sent no more than the
          // socket buffers hold
          const start = yield* exported(url)
          const abort = new AbortController()
          const res = yield* promise(() => fetch(`${url}/events/export?topic=${topic}`, { signal: abort.signal }))
          const reader = res.body!.getReader()
          expect((yield* promise(() => reader.read())).done).toBe(false)
          // until the socket buffers are full: then nothing more is read while the client does not read
          let held = -1
          for (let i = 0; i < 40; i++) {
            yield* promise(() => new Promise((r) => setTimeout(r, 500)))
            const now = (yield* exported(url)) - start
            if (now === held) break
            held = now
          }
          expect(held).toBeGreaterThan(0)
          expect(held).toBeLessThan(count)
          yield* promise(() => new Promise((r) => setTimeout(r, 1000)))
          expect((yield* exported(url)) - start).toBe(held)
          abort.abort()
          yield* promise(() => reader.read().catch(() => undefined))
          yield* promise(() => new Promise((r) => setTimeout(r, 500)))
          const gone = (yield* exported(url)) - start
          yield* promise(() => new Promise((r) => setTimeout(r, 1000)))
          expect((yield* exported(url)) - start).toBe(gone)
          expect(gone).toBeLessThan(count)
          // the aggregator still answers
          expect((yield* getJson(`${url}/topics`)).status).toBe(200)
        }))
    })
  })
}

class ExportAggregator extends Effect.Tag("test/ExportAggregator")<
  ExportAggregator,
  { readonly db: { readonly url: string }; readonly aggregator: Spawned }
>() {}

// the built aggregator as its own process, so its memory is its own
const exportAggregatorLayer = Layer.scoped(
  ExportAggregator,
  Effect.gen(function*() {
    const db = yield* Effect.acquireRelease(Effect.promise(() => freshDatabase("export")), (db) => Effect.promise(() => db.drop()))
    // A 64 MiB old space: a process that held the export would run out of heap; one that streams it keeps
    // its garbage under the cap instead of letting it pile up to a later collection (RSS then stays level).
    // LOG_LEVEL=Warn hides the "Listening on" line the harness reads a port-0 address from: give it a port
    const port = yield* Effect.promise(() => freePort())
    const aggregator = spawnAggregator({ DATABASE_URL: db.url, LOG_LEVEL: "Warn", NODE_OPTIONS: "--max-old-space-size=64" }, port)
    yield* Effect.addFinalizer(() =>
      Effect.promise(async () => {
        aggregator.child.kill("SIGTERM")
        await aggregator.exited
      })
    )
    return { db, aggregator }
  })
)

const rssKb = (pid: number) => {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)
  } catch {
    return 0 // exited: the test fails on what it read
  }
}

describe.skipIf(skipWithoutPostgres)(`export memory${withoutPostgresNote}`, () => {
  layer(exportAggregatorLayer, { excludeTestServices: true, timeout: "180 seconds" }  )((it) => {
    it.effect("80k events of ~1 KB (~90 MiB of NDJSON) export from an aggregator with a 64 MiB heap cap, RSS sampled: it stays level", () =>
      Effect.gen(function*() {
        const { db, aggregator } = yield* ExportAggregator
        yield* promise(() => waitFor(`${aggregator.url}/ready`, 60_000))
        const rows = 80_000
        yield* promise(() =>
          query(db.url, `INSERT INTO events (topic, event_id, "timestamp", source, payload)
            SELECT 'bulk', 'b' || g, timestamptz '2025-01-01' + g * interval '1 second', 'seed', jsonb_build_object('g', g, 'blob', repeat('r', 1000))
            FROM generate_series(1, ${rows}) AS g`)
        )
        const pid = aggregator.child.pid!
        const baseline = rssKb(pid)
        let bytes = 0
        const samples: Array<{ readonly bytes: number; readonly kb: number }> = []
        const sampler = setInterval(() => samples.push({ bytes, kb: rssKb(pid) }), 50)
        const res = yield* promise(() => fetch(`${aggregator.url}/events/export?topic=bulk`))
        let lines = 0
        let last = -1
        let ordered = true
        let rest = ""
        const decoder = new TextDecoder()
        yield* promise(async () => {
          for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
            bytes += chunk.length
            const parts = (rest + decoder.decode(chunk, { stream: true })).split("\n")
            rest = parts.pop()!
            for (const line of parts) {
              const seq = (JSON.parse(line) as StoredEvent).seq
              if (seq <= last) ordered = false
              last = seq
              lines++
            }
          }
        })
        clearInterval(sampler)
        expect(aggregator.child.exitCode, aggregator.output()).toBeNull()
        expect(res.status).toBe(200)
        expect(rest).toBe("")
        expect(lines).toBe(rows)
        expect(ordered).toBe(true)
        expect(bytes).toBeGreaterThan(rows * 1000)
        // a listing held whole would grow with the bytes sent; a stream levels off once its garbage does
        const third = samples.filter((x) => x.bytes < bytes / 3).reduce((m, x) => Math.max(m, x.kb), baseline)
        const later = samples.filter((x) => x.bytes >= bytes / 3).reduce((m, x) => Math.max(m, x.kb), baseline)
        const what = `RSS ${(baseline / 1024).toFixed(0)} MiB before, ${(third / 1024).toFixed(0)} MiB at most in the first third, ` +
          `${(later / 1024).toFixed(0)} MiB at most after (${samples.length} samples; ${(bytes / 2 ** 20).toFixed(0)} MiB sent)`
        console.log(what)
        expect(samples.length).toBeGreaterThan(10)
        expect((later - third) / 1024, what).toBeLessThan(16)
        expect((later - baseline) / 1024, what).toBeLessThan(64)
      }), 240_000)
  })
})
