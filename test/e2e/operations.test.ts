import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { parseExposition, sumOf } from "../support/prometheus.js"
import { event, get, post, uniqueTopic } from "./support/http.js"
import { E2eLive } from "./support/target.js"

// What an operator reaches: the API document, metrics, request ids and the dashboard. Black-box: other
// clients may be using the same aggregator, so figures are compared as "moved by at least".

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: operating it", (it) => {
  it.effect("GET /openapi.json documents 422 (not 400) and 405 on every operation; /docs serves Swagger UI", () =>
    Effect.gen(function*() {
      const res = yield* get("/openapi.json")
      expect(res.status).toBe(200)
      for (const [path, ops] of Object.entries(res.json.paths) as Array<[string, any]>) {
        for (const [method, op] of Object.entries(ops) as Array<[string, any]>) {
          expect(op.responses["400"], `${method} ${path}`).toBeUndefined()
          expect(op.responses["405"], `${method} ${path}`).toBeDefined()
          expect(op.responses["422"], `${method} ${path}`).toBeDefined()
        }
      }
      const docs = yield* get("/docs")
      expect(docs.status).toBe(200)
      expect(docs.headers.get("content-type")).toMatch(/^text\/html/)
    }))

  it.effect("GET /metrics is Prometheus text whose event counters move with what this case sends", () =>
    Effect.gen(function*() {
      const scrape = Effect.map(get("/metrics"), (res) => {
        expect(res.status).toBe(200)
        expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/)
        return parseExposition(res.text)
      })
      const before = yield* scrape
      const topic = uniqueTopic("metrics")
      expect((yield* post("/publish", event(topic, "a"))).status).toBe(201)
      expect((yield* post("/publish", event(topic, "a"))).status).toBe(200)
      expect((yield* post("/publish", { topic })).status).toBe(422)
      const after = yield* scrape
      const moved = (result: string) =>
        sumOf(after, "aggregator_events_total", { result }) - sumOf(before, "aggregator_events_total", { result })
      expect(moved("processed")).toBeGreaterThanOrEqual(1)
      expect(moved("duplicate")).toBeGreaterThanOrEqual(1)
      expect(moved("rejected")).toBeGreaterThanOrEqual(1)
      for (const name of ["aggregator_http_request_duration_seconds", "aggregator_batch_size_events", "aggregator_commit_duration_seconds"]) {
        expect(after.types.get(name), name).toBe("histogram")
      }
      for (const name of ["aggregator_pending_events", "aggregator_db_pool_connections", "aggregator_announcements_total"]) {
        expect(after.types.has(name), name).toBe(true)
      }
      expect(after.samples.some((s) => Object.values(s.labels).includes(topic))).toBe(false)
    }))

  it.effect("every answer carries an X-Request-Id; a plain one from a proxy is kept", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("rid")
      const a = yield* post("/publish", event(topic, "r1"))
      const b = yield* post("/publish", event(topic, "r2"), { "x-request-id": "proxy-7f3a.1" })
      const missing = yield* get("/no/such/route")
      expect(a.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)
      expect(b.headers.get("x-request-id")).toBe("proxy-7f3a.1")
      expect(missing.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)
      expect(missing.headers.get("x-request-id")).not.toBe(a.headers.get("x-request-id"))
    }))

  it.effect("GET /dashboard is one self-contained HTML page reading /stats and the live tail", () =>
    Effect.gen(function*() {
      const res = yield* get("/dashboard")
      expect(res.status).toBe(200)
      expect(res.headers.get("content-type")).toMatch(/^text\/html/)
      expect(res.headers.get("content-security-policy")).toContain("default-src 'none'")
      expect(res.text).toContain('fetch(root + "stats"')
      expect(res.text).toContain('new EventSource(root + "events/stream")')
      // nothing loaded from elsewhere
      expect(res.text).not.toMatch(/<(script|link|img)[^>]+(src|href)=["']?(https?:)?\/\//i)
    }))
})
