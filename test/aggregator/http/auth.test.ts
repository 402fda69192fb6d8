import { describe, expect, it, layer } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { spawn } from "node:child_process"
import { aggregatorLayer, event, postJson, promise, readyAggregator, spawnAggregator, unique, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"
import { runPublisher } from "../../support/publisher.js"

/** `node dist/tester [vitest args]` with only the given settings of its own (vitest's env would leak in otherwise). */
const runTester = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const { AGGREGATOR_URL: _u, API_KEY: _k, VITEST: _v, VITEST_POOL_ID: _p, VITEST_WORKER_ID: _w, ...rest } = process.env
    const child = spawn(process.execPath, ["dist/tester", ...args], { env: { ...rest, ...env }, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    child.stdout.on("data", (d) => (output += d))
    child.stderr.on("data", (d) => (output += d))
    child.on("error", reject)
    // eslint-disable-next-line no-control-regex
    child.on("close", (code) => resolve({ code, output: output.replace(/\x1b\[[0-9;]*m/g, "") }))
  })

const bearer = (key: string) => ({ authorization: `Bearer ${key}` })

const publish = (url: string, path: "/publish" | "/publish/batch", body: unknown, headers: Record<string, string> = {}) =>
  promise(() =>
    postJson(`${url}${path}`, body, { headers: { "content-type": "application/json", ...headers } })
      .then(async (r) => ({ status: r.status, headers: r.headers, json: (await r.json()) as any }))
  )

/** The test server, once migrated (readiness is reached in the background). */
const server = readyAggregator

const uptimeStats = (url: string) => promise(() => fetch(`${url}/stats`).then(async (r) => ((await r.json()) as any).uptime_stats))

const rowsOf = (databaseUrl: string, topic: string) =>
  promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]).then((r) => r[0].n as number))

const expectUnauthorized = (answer: { status: number; headers: Headers; json: any }, what: string) => {
  expect(answer.status, what).toBe(401)
  expect(answer.headers.get("www-authenticate"), what).toMatch(/^Bearer\b/)
  expect(answer.json, what).toMatchObject({ error: "unauthorized" })
  expect(typeof answer.json.message).toBe("string")
}

// Headers that must not pass: none, another scheme, no scheme, the wrong key, a key's prefix or extension,
// a key with a different case, two tokens.
const refused: ReadonlyArray<[string, Record<string, string>]> = [
  ["no header", {}],
  ["empty header", { authorization: "" }],
  ["wrong key", bearer("k3")],
  ["prefix of a key", bearer("k")],
  ["key extended", bearer("k1x")],
  ["other case", bearer("K1")],
  ["both keys", bearer("k1,k2")],
  ["Basic scheme", { authorization: `Basic ${Buffer.from("k1:k1").toString("base64")}` }],
  ["no scheme", { authorization: "k1" }],
  ["scheme only", { authorization: "Bearer" }],
  ["two tokens", { authorization: "Bearer k1 k2" }]
]

describe.skipIf(skipWithoutPostgres)(`API keys${withoutPostgresNote}`, () => {
  layer(aggregatorLayer({ API_KEYS: " k1 , k2,," }), { excludeTestServices: true, timeout: "60 seconds" })(
    "an aggregator with API_KEYS",
    (it) => {
      it.effect("publish without a valid bearer key is a 401 with WWW-Authenticate; stores and counts nothing", () =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* server
          const topic = unique("refused")
          const before = yield* uptimeStats(url)
          for (const [what, headers] of refused) {
            expectUnauthorized(yield* publish(url, "/publish", event(topic, "e"), headers), `single, ${what}`)
            expectUnauthorized(yield* publish(url, "/publish/batch", { events: [event(topic, "b")] }, headers), `batch, ${what}`)
          }
          // an invalid body is not even looked at: still 401, and not a rejected event
          expectUnauthorized(yield* publish(url, "/publish", { nope: true }), "invalid body")
          expectUnauthorized(yield* publish(url, "/publish", "not json"), "non-JSON body")
          expect(yield* uptimeStats(url)).toEqual(before)
          expect(yield* rowsOf(databaseUrl, topic)).toBe(0)
        }))

      it.effect("each configured key publishes (single and batch), with the scheme in any case", () =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* server
          const topic = unique("accepted")
          const before = yield* uptimeStats(url)
          const one = yield* publish(url, "/publish", event(topic, "a"), bearer("k1"))
          expect(one.status).toBe(201)
          expect(one.json).toEqual({ status: "processed", id: "a", topic })
          expect((yield* publish(url, "/publish", event(topic, "b"), bearer("k2"))).status).toBe(201)
          expect((yield* publish(url, "/publish", event(topic, "b"), { authorization: "bearer k1" })).json.status)
            .toBe("dropped_duplicate")
          const batch = yield* publish(url, "/publish/batch", { events: [event(topic, "c"), event(topic, "a")] }, bearer("k2"))
          expect(batch.status).toBe(200)
          expect(batch.json).toMatchObject({ received: 2, processed: 1, duplicates: 1, rejected: 0 })
          // a rejection behind a valid key still counts as a rejected event
          expect((yield* publish(url, "/publish", { topic }, bearer("k1"))).status).toBe(422)
          const after = yield* uptimeStats(url)
          expect(after.received - before.received).toBe(6)
          expect(after.unique_processed - before.unique_processed).toBe(3)
          expect(after.rejected - before.rejected).toBe(1)
          expect(yield* rowsOf(databaseUrl, topic)).toBe(3)
        }))

      it.effect.prop(
        "any Authorization value other than `Bearer k1` / `Bearer k2` is refused and moves nothing",
        [fc.oneof(fc.string(), fc.string().map((s) => `Bearer ${s}`), fc.stringMatching(/^Bearer k[0-9a-z]{0,3}$/))],
        ([header]) =>
          Effect.gen(function*() {
            const { databaseUrl, url } = yield* server
            // fetch refuses header values it cannot send (control characters, non-Latin-1)
            const value = header.replace(/[^\x20-\x7e]/g, "")
            const valid = /^\s*bearer +k[12] *$/i.test(value)
            const topic = unique("prop")
            const before = yield* uptimeStats(url)
            const answer = yield* publish(url, "/publish", event(topic, "e"), { authorization: value })
            if (valid) {
              expect(answer.status).toBe(201)
              return
            }
            expectUnauthorized(answer, JSON.stringify(value))
            expect(yield* uptimeStats(url)).toEqual(before)
            expect(yield* rowsOf(databaseUrl, topic)).toBe(0)
          }),
        { fastCheck: { numRuns: 60 } }
      )

      it.effect("an unauthenticated oversized body is a 401, not a 413", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const big = JSON.stringify({ pad: "x".repeat(2 * 1024 * 1024) })
          const before = yield* uptimeStats(url)
          expectUnauthorized(yield* publish(url, "/publish", big), "oversized")
          expectUnauthorized(yield* publish(url, "/publish/batch", big, bearer("nope")), "oversized batch")
          expect((yield* publish(url, "/publish", big, bearer("k1"))).status).toBe(413)
          expect((yield* uptimeStats(url)).rejected - before.rejected).toBe(1)
        }))

      it.effect("health, readiness, stats, reads, the OpenAPI document and /docs need no key", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const topic = unique("open")
          expect((yield* publish(url, "/publish", event(topic, "r"), bearer("k2"))).status).toBe(201)
          for (const path of ["/", "/ready", "/stats", "/events", `/events?topic=${topic}`, `/events/${topic}/r`, "/openapi.json", "/docs"]) {
            const res = yield* promise(() => fetch(`${url}${path}`))
            yield* promise(() => res.arrayBuffer())
            expect(res.status, path).toBe(200)
          }
          // the live tail opens without a key
          const controller = new AbortController()
          const stream = yield* promise(() => fetch(`${url}/events/stream`, { signal: controller.signal }))
          expect(stream.status).toBe(200)
          controller.abort()
        }))

      it.effect("the OpenAPI document lists 401 and the bearer scheme on the publish routes, optional on the event reads", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const spec: any = yield* promise(() => fetch(`${url}/openapi.json`).then((r) => r.json()))
          expect(spec.components.securitySchemes.apiKey).toMatchObject({ type: "http", scheme: "bearer" })
          for (const [path, operations] of Object.entries(spec.paths) as Array<[string, Record<string, any>]>) {
            for (const [method, operation] of Object.entries(operations)) {
              const guarded = method === "post"
              // READS_NEED_KEY may guard these: a key is then needed, otherwise none
              const eventRead = method === "get" && (path.startsWith("/events") || path === "/topics")
              expect(operation.responses["401"] !== undefined, `${method} ${path}`).toBe(guarded || eventRead)
              expect(operation.security ?? [], `${method} ${path}`)
                .toEqual(guarded ? [{ apiKey: [] }] : eventRead ? [{}, { apiKey: [] }] : [])
            }
          }
          expect(Object.keys(spec.paths).filter((p) => spec.paths[p].post !== undefined).sort()).toEqual(["/publish", "/publish/batch"])
        }))

      it.effect("the publisher with --api-key delivers and verifies 500 events; without a key it exits non-zero", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const common = ["--url", url, "--events", "500", "--duplicates", "0.2", "--json"]
          const single = yield* promise(() => runPublisher([...common, "--api-key", "k1", "--mode", "single"]))
          expect(single.code, single.stderr).toBe(0)
          expect(JSON.parse(single.stdout)).toMatchObject({ ok: true, events: 500, processed: 400, duplicates: 100, verification: { ok: true } })
          const batch = yield* promise(() => runPublisher([...common, "--api-key", "k2", "--mode", "batch", "--batch-size", "100"]))
          expect(batch.code, batch.stderr).toBe(0)
          expect(JSON.parse(batch.stdout)).toMatchObject({ ok: true, processed: 400, verification: { ok: true } })
          const before = yield* uptimeStats(url)
          const keyless = yield* promise(() => runPublisher([...common, "--mode", "single"]))
          expect(keyless.code).not.toBe(0)
          expect(JSON.parse(keyless.stdout)).toMatchObject({ ok: false, processed: 0 })
          expect(keyless.stdout + keyless.stderr).toContain("401")
          const wrong = yield* promise(() => runPublisher([...common, "--api-key", "k3", "--mode", "batch"]))
          expect(wrong.code).not.toBe(0)
          expect(yield* uptimeStats(url)).toEqual(before)
        }), { timeout: 120_000 })

      it.effect("the tester with API_KEY passes its suite against a keyed aggregator; without the key its publish cases fail", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          // two publishing cases (one through the derived client, one through raw fetch) keep it short
          const cases = ["-t", "the derived client publishes|an exact duplicate is a 200"]
          const withKey = yield* promise(() => runTester(cases, { AGGREGATOR_URL: url, API_KEY: "k2" }))
          expect(withKey.code, withKey.output.slice(-3000)).toBe(0)
          expect(withKey.output).toMatch(/Tests\s+2 passed/)
          const keyless = yield* promise(() => runTester(cases, { AGGREGATOR_URL: url }))
          expect(keyless.code).not.toBe(0)
          expect(keyless.output).toMatch(/Tests\s+2 failed/)
          expect(keyless.output).toContain("401")
        }), { timeout: 180_000 })
    }
  )

  layer(aggregatorLayer({ API_KEYS: "k1", READS_NEED_KEY: "true" }), { excludeTestServices: true, timeout: "60 seconds" })(
    "an aggregator with API_KEYS and READS_NEED_KEY",
    (it) => {
      it.effect("the event reads and the live tail need a key too; health, stats and metrics do not", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const topic = unique("reads")
          expect((yield* publish(url, "/publish", event(topic, "a"), bearer("k1"))).status).toBe(201)
          const get = (path: string, headers: Record<string, string> = {}) =>
            promise(() => fetch(`${url}${path}`, { headers }).then(async (r) => {
              const json = r.headers.get("content-type")?.startsWith("application/json") ? await r.json() : await r.text()
              return { status: r.status, headers: r.headers, json: json as any }
            }))
          for (
            const path of [
              `/events?topic=${topic}`,
              `/events/${topic}/a`,
              "/events/stream",
              `/events/stream?topic=${topic}`,
              `/events/export?topic=${topic}`,
              "/topics"
            ]
          ) {
            expectUnauthorized(yield* get(path), `${path} without a key`)
            expectUnauthorized(yield* get(path, bearer("k2")), `${path} with a wrong key`)
          }
          const listed = yield* get(`/events?topic=${topic}`, bearer("k1"))
          expect(listed.status).toBe(200)
          expect(listed.json.map((e: any) => e.event_id)).toEqual(["a"])
          expect((yield* get(`/events/${topic}/a`, bearer("k1"))).status).toBe(200)
          expect((yield* get(`/events/export?topic=${topic}`, bearer("k1"))).json).toContain(`"event_id":"a"`)
          expect((yield* get("/topics", bearer("k1"))).json.find((t: any) => t.topic === topic)?.events).toBe(1)
          const controller = new AbortController()
          const stream = yield* promise(() => fetch(`${url}/events/stream`, { headers: bearer("k1"), signal: controller.signal }))
          expect(stream.status).toBe(200)
          controller.abort()
          for (const path of ["/", "/ready", "/stats", "/metrics"]) expect((yield* get(path)).status, path).toBe(200)
        }))
    }
  )

  layer(aggregatorLayer({ API_KEYS: " , " }), { excludeTestServices: true, timeout: "60 seconds" })(
    "an aggregator whose API_KEYS holds no key",
    (it) => {
      it.effect("needs no key, and ignores one", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const topic = unique("open")
          expect((yield* publish(url, "/publish", event(topic, "a"))).status).toBe(201)
          expect((yield* publish(url, "/publish/batch", [event(topic, "b")], bearer("anything"))).status).toBe(200)
        }))
    }
  )

  describe("the built aggregator", () => {
    it("never writes a key, or a refused token, to its log", async () => {
      const db = await freshDatabase("auth")
      const server = spawnAggregator({ DATABASE_URL: db.url, API_KEYS: "sekrit-key-one,sekrit-key-two", LOG_LEVEL: "All" })
      try {
        await waitFor(`${await server.listening}/ready`)
        const topic = unique("log")
        const statuses: Array<number> = []
        const headers = ["Bearer sekrit-key-one", "Bearer sekrit-key-two", "Bearer sekrit-wrong", "sekrit-bare"]
        for (const [i, authorization] of headers.entries()) {
          const res = await postJson(`${server.url}/publish`, event(topic, `e${i}`), {
            headers: { "content-type": "application/json", authorization }
          })
          statuses.push(res.status)
        }
        expect(statuses).toEqual([201, 201, 401, 401])
      } finally {
        server.child.kill("SIGTERM")
        await server.exited
        await db.drop()
      }
      expect(server.output()).toContain("Listening on")
      expect(server.output()).not.toContain("sekrit")
    }, 60_000)
  })
})
