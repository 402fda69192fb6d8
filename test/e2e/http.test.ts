import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { deflateSync, gzipSync } from "node:zlib"
import { event, eventPath, get, post, send, uniqueTopic } from "./support/http.js"
import { raw } from "./support/raw.js"
import { E2e, E2eLive } from "./support/target.js"

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: the HTTP surface", (it) => {
  it.effect("GET / says alive with the service name, version and uptime", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const alive = yield* client.health.alive()
      expect(alive).toMatchObject({ status: "alive", service: "aggregator" })
      expect(alive.version).toMatch(/^\d+\.\d+\.\d+/)
      expect(alive.uptime_seconds).toBeGreaterThanOrEqual(0)
    }))

  it.effect("GET /ready says ready with the database it uses", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const ready = yield* client.health.ready()
      expect(ready.status).toBe("ready")
      expect(["postgresql", "pglite"]).toContain(ready.database)
    }))

  it.effect("an unknown route is a JSON 404 naming the route", () =>
    Effect.gen(function*() {
      const res = yield* get("/no/such/route")
      expect(res.status).toBe(404)
      expect(res.headers.get("content-type")).toMatch(/^application\/json/)
      expect(res.json).toMatchObject({ error: "not_found" })
      expect(res.json.message).toContain("/no/such/route")
    }))

  it.effect.each([
    ["GET", "/publish", "POST"],
    ["PUT", "/publish", "POST"],
    ["DELETE", "/publish/batch", "POST"],
    ["POST", "/stats", "GET"],
    ["POST", "/ready", "GET"],
    ["DELETE", "/", "GET"],
    ["PATCH", "/events", "GET"],
    ["POST", "/events/some-topic/some-id", "GET"]
  ] as const)("%s %s is a JSON 405 with Allow: %s", ([method, path, allow]) =>
    Effect.gen(function*() {
      const withBody = method !== "GET" && method !== "DELETE"
      const res = yield* send(path, {
        method,
        ...(withBody ? { body: "{}", headers: { "content-type": "application/json" } } : {})
      })
      expect(res.status).toBe(405)
      expect(res.headers.get("allow")).toBe(allow)
      expect(res.json).toMatchObject({ error: "method_not_allowed" })
      expect(res.json.message).toContain(allow)
    }))

  it.effect.each([
    ["/publish", "text/plain"],
    ["/publish", "application/x-www-form-urlencoded"],
    ["/publish", "multipart/form-data; boundary=xyz"],
    ["/publish", "application/xml"],
    ["/publish/batch", "text/plain"],
    ["/publish/batch", "application/jsonl"]
  ] as const)("POST %s with content-type %s is a 415", ([path, contentType]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("mime")
      const res = yield* post(path, path === "/publish" ? event(topic, "e") : [event(topic, "e")], { "content-type": contentType })
      expect(res.status).toBe(415)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
      expect(typeof res.json.message).toBe("string")
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect.each([
    ["/publish", "no content-type header"],
    ["/publish/batch", "no content-type header"],
    ["/publish", "an empty content-type header"],
    ["/publish/batch", "an empty content-type header"]
  ] as const)("POST %s with a JSON body and %s is a 415, and nothing is stored", ([path, how]) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("untyped")
      const body = JSON.stringify(path === "/publish" ? event(topic, "e") : [event(topic, "e")])
      const res = yield* raw("POST", path, body, how === "no content-type header" ? {} : { "content-type": "" })
      expect(res.status).toBe(415)
      expect(res.headers["content-type"]).toMatch(/^application\/json/)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
      expect(res.json.message).toContain("application/json")
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("a chunked body with no content-type is a 415, and nothing is stored", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("untyped-chunked")
      const res = yield* raw("POST", "/publish", JSON.stringify(event(topic, "e")), { "transfer-encoding": "chunked" })
      expect(res.status).toBe(415)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("a gzip body with no content-type is a 415", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("untyped-gzip")
      const res = yield* raw("POST", "/publish", gzipSync(JSON.stringify(event(topic, "e"))), { "content-encoding": "gzip" })
      expect(res.status).toBe(415)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("fetch with a byte body sends no content-type: a 415", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("untyped-bytes")
      const res = yield* send("/publish", { method: "POST", body: new TextEncoder().encode(JSON.stringify(event(topic, "e"))) })
      expect(res.status).toBe(415)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
      expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
    }))

  it.effect("with neither body nor content-type: POST /publish is the empty-body 422, POST /stats still a 405", () =>
    Effect.gen(function*() {
      const publish = yield* raw("POST", "/publish", "")
      expect(publish.status).toBe(422)
      expect(publish.json).toMatchObject({ error: "validation_failed" })
      expect(publish.json.issues.map((i: any) => i.path)).toEqual([""])
      const stats = yield* raw("POST", "/stats", "")
      expect(stats.status).toBe(405)
      expect(stats.headers.allow).toBe("GET")
    }))

  it.effect("an unsupported content-encoding is a 415", () =>
    Effect.gen(function*() {
      const res = yield* post("/publish", event(uniqueTopic("br"), "e"), { "content-encoding": "br" })
      expect(res.status).toBe(415)
      expect(res.json).toMatchObject({ error: "unsupported_media_type" })
    }))

  it.effect.each([
    "application/json; charset=utf-8",
    "Application/JSON",
    "application/cloudevents+json"
  ])("content-type %s is accepted as JSON", (contentType) =>
    Effect.gen(function*() {
      const topic = uniqueTopic("ctype")
      const res = yield* post("/publish", event(topic, "e"), { "content-type": contentType })
      expect(res.status).toBe(201)
      expect(res.json).toEqual({ status: "processed", id: "e", topic })
    }))

  it.effect("a gzip- or deflate-encoded body is accepted and stored as sent", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("gzip")
      const gz = yield* post("/publish", gzipSync(JSON.stringify(event(topic, "gz", { payload: { via: "gzip" } }))), {
        "content-encoding": "gzip"
      })
      expect(gz.status).toBe(201)
      const df = yield* post("/publish", deflateSync(JSON.stringify(event(topic, "df", { payload: { via: "deflate" } }))), {
        "content-encoding": "deflate"
      })
      expect(df.status).toBe(201)
      const batch = yield* post("/publish/batch", gzipSync(JSON.stringify([event(topic, "b1"), event(topic, "gz")])), {
        "content-encoding": "gzip"
      })
      expect(batch.status).toBe(200)
      expect(batch.json).toMatchObject({ received: 2, processed: 1, duplicates: 1, rejected: 0 })
      expect((yield* get(eventPath(topic, "gz"))).json).toMatchObject({ topic, event_id: "gz", payload: { via: "gzip" } })
      expect((yield* get(eventPath(topic, "df"))).json).toMatchObject({ topic, event_id: "df", payload: { via: "deflate" } })
    }))

  it.effect("a body that is not valid gzip is a 422, not a 500", () =>
    Effect.gen(function*() {
      const res = yield* post("/publish", new TextEncoder().encode("{\"plainly\":\"not gzip\"}"), { "content-encoding": "gzip" })
      expect(res.status).toBe(422)
      expect(res.json).toMatchObject({ error: "validation_failed" })
    }))

  it.effect("a gzip body that inflates past the byte limit is a 413", () =>
    Effect.gen(function*() {
      const bomb = gzipSync(Buffer.alloc(32 * 1024 * 1024, 32))
      expect(bomb.length).toBeLessThan(1024 * 1024)
      const res = yield* post("/publish", bomb, { "content-encoding": "gzip" })
      expect(res.status).toBe(413)
      expect(res.json).toMatchObject({ error: "payload_too_large" })
    }))

  it.effect.each(["//publish", "/PUBLISH", "/%70ublish", "/publish;a", "/publish/./", "//publish/batch"])(
    "POST %s is not /publish under another spelling: a JSON 404 that stores and counts nothing",
    (path) =>
      Effect.gen(function*() {
        const { exclusive } = yield* E2e
        const topic = uniqueTopic("spelling")
        const before = exclusive ? (yield* get("/stats")).json.uptime_stats : undefined
        const res = yield* raw("POST", path, JSON.stringify(event(topic, "e")), { "content-type": "application/json" })
        expect(res.status).toBe(404)
        expect(res.json).toMatchObject({ error: "not_found" })
        if (exclusive) expect((yield* get("/stats")).json.uptime_stats).toEqual(before)
        expect((yield* get(`/events?topic=${topic}`)).json).toEqual([])
      })
  )

  it.effect("POST /publish/ (a trailing slash) is /publish in every respect: stored, and a 422 there counts as rejected", () =>
    Effect.gen(function*() {
      const { exclusive } = yield* E2e
      const topic = uniqueTopic("trailing")
      const before = exclusive ? (yield* get("/stats")).json.uptime_stats : undefined
      expect((yield* post("/publish/", event(topic, "e"))).status).toBe(201)
      expect((yield* post("/publish/", { topic })).status).toBe(422)
      if (exclusive) {
        const after = (yield* get("/stats")).json.uptime_stats
        expect(after.unique_processed - before.unique_processed).toBe(1)
        expect(after.rejected - before.rejected).toBe(1)
      }
    }))
})

