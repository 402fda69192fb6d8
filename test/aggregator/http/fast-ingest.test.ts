import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, FastCheck as fc, Layer } from "effect"
import * as http from "node:http"
import { afterAll } from "vitest"
import { gzipSync } from "node:zlib"
import { aggregatorLayer, readyAggregator, TestAggregator } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { query } from "../../support/database.js"
import { parseExposition, sumOf } from "../../support/prometheus.js"
import { bodyOf, breaksArb, broken, topicOf, validEvent } from "../../e2e/support/events.js"

// `POST /publish` in its common case is answered by the ingest front door (http/FastIngest.ts), beneath the
// HttpApi endpoint; everything else goes to the endpoint. Two servers, one with the front door and one
// without (FAST_INGEST=false), get the same generated requests in the same order: every answer (status, body,
// headers but the date and a generated request id), the counters and the rows stored must be the same — and
// the front door must really have answered the common cases, or the comparison would prove nothing.

interface Sent {
  readonly status: number
  readonly headers: Record<string, string>
  readonly body: string
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
afterAll(() => agent.destroy())

/** One request over node:http, so any header (Expect, Content-Encoding) and chunked bodies can be sent as given. */
const send = (url: string, headers: Record<string, string>, body: Uint8Array | string, chunked: boolean) =>
  new Promise<Sent>((resolve, reject) => {
    const bytes = typeof body === "string" ? Buffer.from(body) : Buffer.from(body)
    const request = http.request(`${url}/publish`, {
      method: "POST",
      agent,
      headers: chunked ? headers : { ...headers, "content-length": String(bytes.length) }
    }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (c: Buffer) => chunks.push(c))
      response.on("end", () => {
        const kept: Record<string, string> = {}
        for (const [k, v] of Object.entries(response.headers)) {
          if (k === "date") continue
          kept[k] = k === "x-request-id" && headers["x-request-id"] !== v ? "<generated>" : String(v)
        }
        resolve({ status: response.statusCode ?? 0, headers: kept, body: Buffer.concat(chunks).toString("utf8") })
      })
    })
    request.on("error", reject)
    if (chunked) {
      // two pieces: a body without a declared length
      request.write(bytes.subarray(0, bytes.length >> 1))
      request.end(bytes.subarray(bytes.length >> 1))
    } else request.end(bytes)
  })

interface Case {
  readonly headers: Record<string, string>
  readonly body: Uint8Array | string
  readonly chunked: boolean
}

const json = { "content-type": "application/json" }

const bodies = (topic: string, earlier: Array<string>): fc.Arbitrary<string | Uint8Array> =>
  fc.oneof(
    { weight: 6, arbitrary: validEvent.map((e) => JSON.stringify(bodyOf(topicOf(topic, e), e))) },
    // a re-send of an event sent before (a duplicate when that one was stored)
    { weight: 3, arbitrary: fc.nat().map((i) => earlier.length === 0 ? "{}" : earlier[i % earlier.length]) },
    { weight: 3, arbitrary: fc.tuple(validEvent, breaksArb).map(([e, b]) => JSON.stringify(broken(bodyOf(topicOf(topic, e), e), b))) },
    fc.uint8Array({ maxLength: 200 }),
    fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
    validEvent.map((e) => JSON.stringify(bodyOf(topicOf(topic, e), e)).replace(/^\{/, `{"topic":"twice",`)),
    fc.integer({ min: 90, max: 140 }).map((n) => `{"topic":"${topic}/deep","event_id":"d","timestamp":"2026-01-01T00:00:00Z","payload":${"[".repeat(n)}${"]".repeat(n)}}`),
    fc.constant("")
  )

const headerVariants = (keys: ReadonlyArray<string>): fc.Arbitrary<Record<string, string>> =>
  fc.record({
    type: fc.constantFrom<Array<Record<string, string>>>(
      json,
      json,
      json,
      { "content-type": "application/json; charset=utf-8" },
      { "content-type": "application/cloudevents+json" },
      { "content-type": "text/plain" },
      {}
    ),
    auth: keys.length === 0
      ? fc.constant<Record<string, string>>({})
      : fc.constantFrom<Array<Record<string, string>>>(
        { authorization: `Bearer ${keys[0]}` },
        { authorization: `Bearer ${keys[0]}` },
        { authorization: `bearer  ${keys[keys.length - 1]} ` },
        { authorization: "Bearer wrong" },
        {}
      ),
    id: fc.constantFrom<Array<Record<string, string>>>({}, {}, { "x-request-id": "lb-1234" }, { "x-request-id": "bad id!" })
  }).map(({ auth, id, type }) => ({ ...type, ...auth, ...id }))

const cases = (topic: string, keys: ReadonlyArray<string>, earlier: Array<string>): fc.Arbitrary<Case> =>
  fc.record({
    headers: headerVariants(keys),
    body: bodies(topic, earlier),
    encoding: fc.constantFrom("identity-implicit", "identity-implicit", "identity-implicit", "identity", "gzip"),
    chunked: fc.integer({ min: 0, max: 9 }).map((n) => n < 3)
  }).map(({ body, chunked, encoding, headers }) => {
    if (typeof body === "string" && body.startsWith("{\"topic\"")) earlier.push(body)
    if (encoding === "gzip") return { headers: { ...headers, "content-encoding": "gzip" }, body: gzipSync(body), chunked }
    return { headers: encoding === "identity" ? { ...headers, "content-encoding": "identity" } : headers, body, chunked }
  })

const fastAnswers = (url: string) =>
  Effect.promise(async () => sumOf(parseExposition(await (await fetch(`${url}/metrics`)).text()), "aggregator_fast_ingest_requests_total"))

const running = (env: Record<string, string>) =>
  Effect.map(Layer.build(aggregatorLayer(env)), (context) => Context.get(context, TestAggregator)).pipe(
    Effect.tap((server) => Effect.provideService(readyAggregator, TestAggregator, server))
  )

describe.skipIf(skipWithoutPostgres)(`the ingest front door answers exactly as the endpoint${withoutPostgresNote}`, () => {
  for (const keys of [[], ["key-one", "key-two"]]) {
    it.live(`same answers, counters and rows with and without it (${keys.length === 0 ? "no API keys" : "API_KEYS set"})`, () =>
      Effect.scoped(Effect.gen(function*() {
        const env = keys.length === 0 ? {} : { API_KEYS: keys.join(",") }
        const fast = yield* running({ ...env, FAST_INGEST: "true" })
        const plain = yield* running({ ...env, FAST_INGEST: "false" })
        const topic = `fd-${process.pid}-${keys.length}`
        const earlier: Array<string> = []
        const sample = fc.sample(fc.array(cases(topic, keys, earlier), { minLength: 30, maxLength: 30 }), { numRuns: 12, seed: 4242 + keys.length })
        let common = 0
        // Effect's metric registry is the process's: both in-process servers count into it, only one of them should
        const fastBefore = yield* fastAnswers(fast.url)
        for (const run of sample) {
          for (const c of run) {
            const a = yield* Effect.promise(() => send(fast.url, c.headers, c.body, c.chunked))
            const b = yield* Effect.promise(() => send(plain.url, c.headers, c.body, c.chunked))
            expect(a, `the same answer for ${JSON.stringify({ ...c, body: String(c.body).slice(0, 200) })}`).toEqual(b)
            // what the front door takes: a stored or duplicate event sent with a declared length, not compressed
            if ((a.status === 201 || a.status === 200) && !c.chunked && c.headers["content-encoding"] !== "gzip") common++
          }
        }
        // the comparison covered the front door's own answers, not only hand-overs; and only one server has it
        expect(common).toBeGreaterThan(40)
        expect((yield* fastAnswers(fast.url)) - fastBefore).toBe(common)
        const stats = (url: string) =>
          Effect.promise(async () => ((await (await fetch(`${url}/stats`)).json()) as { uptime_stats: unknown }).uptime_stats)
        expect(yield* stats(fast.url)).toEqual(yield* stats(plain.url))
        const rows = (databaseUrl: string) =>
          Effect.promise(() =>
            query(databaseUrl, `SELECT topic, event_id, "timestamp", source, payload FROM events ORDER BY topic, event_id`)
          )
        expect(yield* rows(fast.databaseUrl)).toEqual(yield* rows(plain.databaseUrl))
      })), 120_000)
  }

  it.live("a write that does not commit is the same 503 with Retry-After, counted as a storage failure", () =>
    Effect.scoped(Effect.gen(function*() {
      const fast = yield* running({ FAST_INGEST: "true" })
      const plain = yield* running({ FAST_INGEST: "false" })
      const refuse = `CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.topic = 'poison' THEN RAISE EXCEPTION 'poisoned topic'; END IF; RETURN NEW; END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison();`
      yield* Effect.promise(() => Promise.all([query(fast.databaseUrl, refuse), query(plain.databaseUrl, refuse)]))
      const fastBefore = yield* fastAnswers(fast.url)
      const body = JSON.stringify({ topic: "poison", event_id: "p1", timestamp: "2026-11-30T08:00:00Z" })
      const a = yield* Effect.promise(() => send(fast.url, json, body, false))
      const b = yield* Effect.promise(() => send(plain.url, json, body, false))
      expect(a.status).toBe(503)
      expect(a.headers["retry-after"]).toBe("1")
      expect(a).toEqual(b)
      expect((yield* fastAnswers(fast.url)) - fastBefore).toBe(1)
      const failures = (url: string) =>
        Effect.promise(async () => ((await (await fetch(`${url}/stats`)).json()) as { storage_failures: number }).storage_failures)
      expect(yield* failures(fast.url)).toBe(1)
      expect(yield* failures(plain.url)).toBe(1)
    })), 60_000)

  it.live("a client that goes away before its body has arrived stores nothing and leaves the server serving", () =>
    Effect.scoped(Effect.gen(function*() {
      const fast = yield* running({ FAST_INGEST: "true" })
      const body = JSON.stringify({ topic: "gone", event_id: "g1", timestamp: "2026-11-30T08:00:00Z" })
      yield* Effect.promise(() =>
        new Promise<void>((resolve) => {
          const request = http.request(`${fast.url}/publish`, {
            method: "POST",
            headers: { ...json, "content-length": String(body.length) }
          })
          request.on("error", () => resolve())
          request.write(body.slice(0, 10))
          setTimeout(() => {
            request.destroy()
            resolve()
          }, 100)
        })
      )
      const after = yield* Effect.promise(() => send(fast.url, json, body, false))
      expect(after.status).toBe(201)
      const rows = yield* Effect.promise(() => query(fast.databaseUrl, "SELECT event_id FROM events WHERE topic = 'gone'"))
      expect(rows).toEqual([{ event_id: "g1" }])
      const stats = yield* Effect.promise(async () => ((await (await fetch(`${fast.url}/stats`)).json()) as { uptime_stats: unknown }).uptime_stats)
      expect(stats).toEqual({ received: 1, unique_processed: 1, duplicate_dropped: 0, rejected: 0 })
    })), 60_000)
})
