import { describe, expect, it } from "@effect/vitest"
import * as net from "node:net"
import { afterAll, beforeAll } from "vitest"
import { Effect, FastCheck as fc, Metric, MetricBoundaries } from "effect"
import { renderPrometheus } from "../../../src/aggregator/ops/Metrics.js"
import { postJson, spawnAggregator, type Spawned, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase } from "../../support/database.js"
import { parseExposition, sumOf, valueOf } from "../../support/prometheus.js"

// GET /metrics (Prometheus text from Effect's Metric registry), the request id, and the JSON logs.

let unique = 0
const fresh = (what: string) => `aggregator_test_${what}_${process.pid}_${unique++}`

describe("Prometheus rendering", () => {
  const bounds = [0.5, 1, 2, 5, 10, 50]

  it.effect.prop(
    "a histogram renders as cumulative buckets that agree with the observations, +Inf = _count",
    [fc.array(fc.double({ min: 0, max: 100, noNaN: true }), { maxLength: 200 })],
    ([observations]) =>
      Effect.gen(function*() {
        const name = fresh("hist")
        const h = Metric.histogram(name, MetricBoundaries.fromIterable(bounds))
        yield* Metric.value(h) // registered even when nothing is observed
        for (const o of observations) yield* Metric.update(h, o)
        const parsed = parseExposition(renderPrometheus(yield* Metric.snapshot, name))
        expect(parsed.types.get(name)).toBe("histogram")
        for (const le of bounds) {
          expect(valueOf(parsed, `${name}_bucket`, { le: String(le) })).toBe(observations.filter((o) => o <= le).length)
        }
        expect(valueOf(parsed, `${name}_bucket`, { le: "+Inf" })).toBe(observations.length)
        expect(valueOf(parsed, `${name}_count`)).toBe(observations.length)
        expect(valueOf(parsed, `${name}_sum`)).toBeCloseTo(observations.reduce((a, b) => a + b, 0), 6)
      })
  )

  it.effect.prop(
    "counters and gauges keep their labels, whatever characters the label values hold",
    [fc.string({ maxLength: 20 }), fc.nat(), fc.integer({ min: -1000, max: 1000 })],
    ([label, count, level]) =>
      Effect.gen(function*() {
        const counter = fresh("counter")
        const gauge = fresh("gauge")
        yield* Metric.incrementBy(Metric.tagged(Metric.counter(counter, { description: "a \\ help\nline" }), "k", label), count)
        yield* Metric.set(Metric.tagged(Metric.gauge(gauge), "k", label), level)
        const parsed = parseExposition(renderPrometheus(yield* Metric.snapshot, "aggregator_test_"))
        expect(parsed.types.get(counter)).toBe("counter")
        expect(parsed.help.get(counter)).toBe("a \\\\ help\\nline")
        expect(valueOf(parsed, counter, { k: label })).toBe(count)
        expect(parsed.types.get(gauge)).toBe("gauge")
        expect(valueOf(parsed, gauge, { k: label })).toBe(level)
      })
  )

  it.effect("leaves out metrics without the prefix", () =>
    Effect.gen(function*() {
      yield* Metric.increment(Metric.counter("other_library_total"))
      const text = renderPrometheus(yield* Metric.snapshot)
      expect(text).not.toContain("other_library_total")
    }))
})

const event = (topic: string, event_id: string, payload?: unknown) => ({
  topic,
  event_id,
  timestamp: "2025-06-01T00:00:00Z",
  ...(payload === undefined ? {} : { payload })
})

const scrape = async (url: string) => {
  const res = await fetch(`${url}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8")
  return parseExposition(await res.text())
}

const statsOf = async (url: string): Promise<any> => (await fetch(`${url}/stats`)).json()

const logLines = (agg: Spawned) =>
  agg.output().split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as {
    message: string
    logLevel: string
    annotations: Record<string, unknown>
  })

describe("metrics on the embedded database (PGlite)", () => {
  it("reports its one connection as the pool, and the event counters as with PostgreSQL", async () => {
    const agg = spawnAggregator({ DATA_DIR: "memory://", LOG_SUMMARY_INTERVAL_MS: "60000" })
    try {
      await waitFor(`${await agg.listening}/ready`, 60_000)
      const answers = await Promise.all([1, 2, 3, 1].map((i) => postJson(`${agg.url}/publish`, event("embedded", `p-${i}`))))
      expect(answers.map((r) => r.status).sort()).toEqual([200, 201, 201, 201])
      const metrics = await scrape(agg.url)
      expect(valueOf(metrics, "aggregator_db_pool_connections", { state: "max" })).toBe(1)
      expect(valueOf(metrics, "aggregator_db_pool_connections", { state: "in_use" }) +
        valueOf(metrics, "aggregator_db_pool_connections", { state: "idle" })).toBe(1)
      // PGlite cannot tell who waits for its lock: no figure rather than a made-up 0
      expect(metrics.types.has("aggregator_db_pool_waiting")).toBe(false)
      expect(valueOf(metrics, "aggregator_events_total", { result: "processed" })).toBe(3)
      expect(valueOf(metrics, "aggregator_events_total", { result: "duplicate" })).toBe(1)
      expect(valueOf(metrics, "aggregator_batch_size_events_sum")).toBe(4)
    } finally {
      agg.child.kill("SIGTERM")
    }
    expect(await agg.exited).toBe(0)
  }, 90_000)
})

describe.skipIf(skipWithoutPostgres)(`metrics, request ids and logs of a running aggregator${withoutPostgresNote}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  beforeAll(async () => {
    db = await freshDatabase("ops")
  })
  afterAll(async () => {
    await db?.drop()
  })

  it("GET /metrics moves with traffic and agrees with /stats", async () => {
    const agg = spawnAggregator({ DATABASE_URL: db.url, DB_POOL_SIZE: "7", LOG_SUMMARY_INTERVAL_MS: "60000" })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const before = await scrape(agg.url)
      for (const result of ["processed", "duplicate", "rejected"]) {
        expect(valueOf(before, "aggregator_events_total", { result })).toBe(0)
      }
      expect(valueOf(before, "aggregator_db_pool_connections", { state: "max" })).toBe(7)

      // 40 distinct singles, 10 of them sent again; a batch of 5 with one invalid item and one repeated key
      const singles = Array.from({ length: 40 }, (_, i) => event("metrics", `m-${i}`))
      const answers = await Promise.all([...singles, ...singles.slice(0, 10)].map((e) => postJson(`${agg.url}/publish`, e)))
      const created = answers.filter((r) => r.status === 201).length
      const duplicated = answers.filter((r) => r.status === 200).length
      expect(created + duplicated).toBe(50)
      const batch = await postJson(`${agg.url}/publish/batch`, {
        events: [event("metrics", "b-1"), event("metrics", "b-2"), { topic: "metrics" }, event("metrics", "b-1"), event("metrics", "m-0")]
      })
      expect(batch.status).toBe(200)
      expect((await postJson(`${agg.url}/publish`, "{not json")).status).toBe(422)
      // a client that leaves while its body is still being read: counted as 499, not lost, nothing stored
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(Number(new URL(agg.url).port), "127.0.0.1", () => {
          socket.write("POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"topic\"")
          setTimeout(() => {
            socket.destroy()
            resolve()
          }, 200)
        })
        socket.on("error", reject)
      })
      await expect.poll(async () =>
        sumOf(await scrape(agg.url), "aggregator_http_request_duration_seconds_count", { route: "POST /publish", status: "499" }), {
        timeout: 5_000
      }).toBe(1)
      // a live-tail stream is open for as long as its client wants: it is not a latency
      const stream = new AbortController()
      const tail = await fetch(`${agg.url}/events/stream`, { signal: stream.signal })
      expect(tail.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)
      await tail.body!.getReader().read()
      stream.abort()

      const [after, stats] = [await scrape(agg.url), await statsOf(agg.url)]
      const events = (result: string) => valueOf(after, "aggregator_events_total", { result })
      expect(events("processed")).toBe(42)
      expect(events("duplicate")).toBe(10 + 2)
      expect(events("rejected")).toBe(2)
      expect(events("processed")).toBe(stats.uptime_stats.unique_processed)
      expect(events("duplicate")).toBe(stats.uptime_stats.duplicate_dropped)
      expect(events("rejected")).toBe(stats.uptime_stats.rejected)
      expect(sumOf(after, "aggregator_events_total")).toBe(stats.uptime_stats.received)
      expect(valueOf(after, "aggregator_storage_failures_total")).toBe(stats.storage_failures)

      // announcements leave through a background fiber: wait until all 42 are out, then compare
      await expect.poll(async () => valueOf(await scrape(agg.url), "aggregator_announcements_total", { result: "ok" }), {
        timeout: 10_000
      }).toBe(42)
      const latest = await statsOf(agg.url)
      const settled = await scrape(agg.url)
      expect(valueOf(settled, "aggregator_announcements_total", { result: "ok" })).toBe(latest.announcements.published)
      expect(valueOf(settled, "aggregator_announcements_total", { result: "failed" })).toBe(latest.announcements.failed)

      // request latency by declared route and status: one observation per answered request
      const requests = (route: string, status: string) =>
        valueOf(after, "aggregator_http_request_duration_seconds_count", { route, status })
      expect(requests("POST /publish", "201")).toBe(created)
      expect(requests("POST /publish", "200")).toBe(duplicated)
      expect(requests("POST /publish", "422")).toBe(1)
      expect(requests("POST /publish/batch", "200")).toBe(1)
      expect(valueOf(after, "aggregator_http_request_duration_seconds_bucket", { route: "POST /publish", status: "201", le: "+Inf" }))
        .toBe(created)
      expect(after.samples.some((s) => s.labels.route?.includes("m-0"))).toBe(false)
      expect(after.samples.some((s) => s.labels.route === "GET /events/stream")).toBe(false)

      // group commit: every valid event written once per submission (the batch writes b-1, b-2, m-0)
      expect(valueOf(after, "aggregator_batch_size_events_sum")).toBe(50 + 3)
      const flushes = valueOf(after, "aggregator_batch_size_events_count")
      expect(flushes).toBeGreaterThanOrEqual(1)
      expect(flushes).toBeLessThanOrEqual(51)
      expect(valueOf(after, "aggregator_commit_duration_seconds_count")).toBe(flushes)
      expect(valueOf(after, "aggregator_commit_duration_seconds_sum")).toBeGreaterThan(0)
      expect(valueOf(after, "aggregator_pending_events")).toBe(0)
      expect(valueOf(after, "aggregator_db_pool_connections", { state: "in_use" }) +
        valueOf(after, "aggregator_db_pool_connections", { state: "idle" })).toBeLessThanOrEqual(7)
      expect(valueOf(after, "aggregator_db_pool_waiting")).toBe(0)
      expect(valueOf(after, "aggregator_process_resident_memory_bytes")).toBeGreaterThan(10 * 1024 * 1024)

      // every name carries the prefix, every family a HELP line
      for (const name of after.types.keys()) {
        expect(name.startsWith("aggregator_")).toBe(true)
        expect(after.help.get(name)).toBeTruthy()
      }
    } finally {
      agg.child.kill("SIGTERM")
    }
    expect(await agg.exited).toBe(0)
  }, 60_000)

  it("a client that leaves during a slow commit: its request still ends (counted 499) and the event is stored once", async () => {
    // Node never calls a destroyed response's `end` callback; the server must not wait for it forever
    const agg = spawnAggregator({ DATABASE_URL: db.url, FLUSH_WINDOW_MS: "1500", LOG_SUMMARY_INTERVAL_MS: "60000" })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const left = new AbortController()
      const answer = postJson(`${agg.url}/publish`, event("gone", "g-1"), { signal: left.signal })
      setTimeout(() => left.abort(), 200)
      await expect(answer).rejects.toThrow()
      await expect.poll(async () =>
        sumOf(await scrape(agg.url), "aggregator_http_request_duration_seconds_count", { route: "POST /publish", status: "499" }), {
        timeout: 10_000
      }).toBe(1)
      const again = await postJson(`${agg.url}/publish`, event("gone", "g-1"))
      expect(again.status).toBe(200)
      expect((await statsOf(agg.url)).uptime_stats).toMatchObject({ unique_processed: 1, duplicate_dropped: 1, rejected: 0 })
    } finally {
      agg.child.kill("SIGTERM")
    }
    expect(await agg.exited).toBe(0)
  }, 60_000)

  it("logs JSON lines with the service name, a periodic summary instead of a line per event, and no payloads or keys", async () => {
    const secret = "key-Zq8-secret"
    const agg = spawnAggregator(
      { DATABASE_URL: db.url, API_KEYS: secret, LOG_SUMMARY_INTERVAL_MS: "300", LOG_LEVEL: "Info" }
    )
    const auth = { headers: { "content-type": "application/json", authorization: `Bearer ${secret}` } }
    try {
      await waitFor(`${await agg.listening}/ready`)
      const sent = Array.from({ length: 300 }, (_, i) => event("TOPIC-MARKER", `ID-MARKER-${i}`, { secret: "PAYLOAD-MARKER" }))
      for (let i = 0; i < sent.length; i += 30) {
        await Promise.all(sent.slice(i, i + 30).map((e) => postJson(`${agg.url}/publish`, e, auth)))
      }
      expect((await postJson(`${agg.url}/publish`, event("TOPIC-MARKER", "x"), {
        headers: { "content-type": "application/json", authorization: "Bearer wrong-KEY-MARKER" }
      })).status).toBe(401)
      await expect.poll(() =>
        logLines(agg).filter((l) => l.message === "summary").reduce((n, l) => Math.max(n, Number(l.annotations.total_received)), 0), {
        timeout: 10_000
      }).toBe(300)
    } finally {
      agg.child.kill("SIGTERM")
    }
    expect(await agg.exited).toBe(0)

    const lines = logLines(agg)
    for (const line of lines) {
      expect(line.annotations.service).toBe("aggregator")
      expect(typeof line.logLevel).toBe("string")
    }
    const summaries = lines.filter((l) => l.message === "summary")
    expect(summaries.reduce((n, l) => n + Number(l.annotations.received), 0)).toBe(300)
    expect(summaries.reduce((n, l) => n + Number(l.annotations.processed), 0)).toBe(300)
    for (const s of summaries) {
      expect(Number(s.annotations.events_per_s)).toBeGreaterThan(0)
      expect(s.annotations.pending_events).toBeTypeOf("number")
    }
    // start-up, summaries and shutdown: nowhere near a line per event
    expect(lines.length).toBeLessThan(40)
    const text = agg.output()
    for (const marker of ["PAYLOAD-MARKER", "TOPIC-MARKER", "ID-MARKER", secret, "KEY-MARKER"]) {
      expect(text).not.toContain(marker)
    }
  }, 60_000)

  it("gives each request an id: echoed in X-Request-Id, on its log line at Debug, a sane incoming id kept", async () => {
    const agg = spawnAggregator({ DATABASE_URL: db.url, LOG_LEVEL: "Debug", LOG_SUMMARY_INTERVAL_MS: "60000" })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const ids: Array<string> = []
      for (let i = 0; i < 5; i++) {
        const res = await postJson(`${agg.url}/publish`, event("TOPIC-MARKER", `ID-MARKER-D${i}`, { secret: "PAYLOAD-MARKER" }))
        expect(res.status).toBe(201)
        ids.push(res.headers.get("x-request-id")!)
      }
      expect(new Set(ids).size).toBe(5)
      for (const id of ids) expect(id).toMatch(/^[0-9a-f-]{36}$/)
      const kept = await postJson(`${agg.url}/publish`, "{broken", { headers: { "content-type": "application/json", "x-request-id": "lb-42.a:b" } })
      expect(kept.status).toBe(422)
      expect(kept.headers.get("x-request-id")).toBe("lb-42.a:b")
      const replaced = await fetch(`${agg.url}/nowhere`, { headers: { "x-request-id": "bad id <script>" } })
      expect(replaced.status).toBe(404)
      expect(replaced.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/)

      await expect.poll(() => logLines(agg).some((l) => l.message === "request" && l.annotations.status === 404), {
        timeout: 5_000
      }).toBe(true)
      const requests = logLines(agg).filter((l) => l.message === "request")
      for (const id of ids) {
        const line = requests.find((l) => l.annotations.request_id === id)
        expect(line?.annotations).toMatchObject({ method: "POST", route: "POST /publish", status: 201, service: "aggregator" })
        expect(line?.annotations.duration_ms).toBeTypeOf("number")
      }
      expect(requests.find((l) => l.annotations.request_id === "lb-42.a:b")?.annotations).toMatchObject({ status: 422 })
      expect(requests.find((l) => l.annotations.status === 404)?.annotations.route).toBe("other")
      // even at Debug: nothing from the body, the path's values or the query
      expect((await fetch(`${agg.url}/events/TOPIC-MARKER/ID-MARKER-D0?x=QUERY-MARKER`)).status).toBe(200)
      await expect.poll(() => logLines(agg).filter((l) => l.annotations.route === "GET /events/:topic/:event_id").length, {
        timeout: 5_000
      }).toBe(1)
      for (const marker of ["PAYLOAD-MARKER", "TOPIC-MARKER", "ID-MARKER", "QUERY-MARKER"]) {
        expect(agg.output()).not.toContain(marker)
      }
    } finally {
      agg.child.kill("SIGTERM")
    }
    expect(await agg.exited).toBe(0)
  }, 60_000)
})
