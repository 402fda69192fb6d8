import { afterAll, describe, expect, it, layer } from "@effect/vitest"
import { Effect, FastCheck as fc, Schema } from "effect"
import * as fs from "node:fs"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { renderReport } from "../../src/publisher/Render.js"
import { Summary } from "../../src/publisher/Summary.js"
import { sampleStats } from "../support/stats.js"
import { bucketIndex, LATENCY_BUCKETS_MS } from "../../src/publisher/Latency.js"
import { histogramOf, latencyOf } from "../support/latency.js"
import { aggregatorLayer, TestAggregator } from "../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { runPublisher } from "../support/publisher.js"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "publisher-report-"))
const cleanup: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const f of cleanup.reverse()) await f()
  fs.rmSync(dir, { recursive: true, force: true })
})

const escapeHtml = (text: string) =>
  text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" })[c]!)

/** The value shown for a headline figure, read back as a number. */
const figure = (html: string, name: string): number => {
  const match = new RegExp(`data-figure="${name}">([^<]*)<`).exec(html)
  expect(match, `figure ${name} in the report`).not.toBeNull()
  return Number(match![1].replace(/,/g, ""))
}

/** The histogram's bars, in order: their bucket bound and count. */
const bars = (html: string) =>
  [...html.matchAll(/<rect class="bar[^"]*" data-le-ms="([^"]+)" data-count="(\d+)"/g)].map((m) => ({
    le_ms: m[1] === "+Inf" ? "+Inf" : Number(m[1]),
    count: Number(m[2])
  }))

const sum = (xs: ReadonlyArray<{ readonly count: number }>) => xs.reduce((total, x) => total + x.count, 0)

describe("latency histogram", () => {
  const bounds = [...LATENCY_BUCKETS_MS]
  // boundary values themselves, values between and beyond them
  const latency = fc.oneof(
    fc.constantFrom(...bounds),
    fc.double({ min: 0, max: 20_000, noNaN: true }),
    fc.double({ min: 0, max: 3, noNaN: true })
  )

  it.prop("counts sum to the samples, one bucket per bound plus +Inf", [fc.array(latency, { maxLength: 400 })], ([xs]) => {
    const h = histogramOf(xs)
    expect(h.map((b) => b.le_ms)).toEqual([...bounds, "+Inf"])
    expect(sum(h)).toBe(xs.length)
  })

  it.prop("each sample lands in the first bucket whose bound is ≥ it", [latency], ([x]) => {
    const h = histogramOf([x])
    const i = h.findIndex((b) => b.count === 1)
    expect(sum(h)).toBe(1)
    const le = h[i].le_ms
    if (le === "+Inf") expect(x).toBeGreaterThan(bounds[bounds.length - 1])
    else expect(le).toBeGreaterThanOrEqual(x)
    if (i > 0) expect(h[i - 1].le_ms).toBeLessThan(x)
  })

  it.prop(
    "any ascending bounds: the bucket is the first bound ≥ the sample, and histograms of parts add up",
    [
      fc.uniqueArray(fc.double({ min: 0, max: 1e6, noNaN: true }), { maxLength: 20 }),
      fc.array(fc.double({ min: -1, max: 2e6, noNaN: true }), { maxLength: 200 }),
      fc.array(fc.double({ min: -1, max: 2e6, noNaN: true }), { maxLength: 200 })
    ],
    ([raw, a, b]) => {
      const bs = [...raw].sort((x, y) => x - y)
      for (const x of a) {
        const i = bucketIndex(x, bs)
        const first = bs.findIndex((bound) => bound >= x)
        expect(i).toBe(first === -1 ? bs.length : first)
      }
      const whole = histogramOf([...a, ...b], bs)
      const parts = [histogramOf(a, bs), histogramOf(b, bs)]
      expect(whole.map((x) => x.count)).toEqual(whole.map((_, i) => parts[0][i].count + parts[1][i].count))
      expect(sum(whole)).toBe(a.length + b.length)
    }
  )

  it.prop("the summary's latency carries its sample count and a histogram of exactly those samples", [
    fc.array(latency, { minLength: 1, maxLength: 300 })
  ], ([xs]) => {
    const l = latencyOf(xs)!
    expect(l.samples).toBe(xs.length)
    expect(l.histogram).toEqual(histogramOf(xs))
    expect(sum(l.histogram)).toBe(xs.length)
  })

  it("no samples: no latency at all", () => {
    expect(latencyOf([])).toBeNull()
  })
})

const hostile = "<script>alert('x')</script>"

/** A summary with user-controlled and server-controlled strings made hostile, everything else from `s`. */
const poisoned = (s: Summary): Summary => ({
  ...s,
  url: `http://example.test/${hostile}?a=1&b="2"`,
  run_id: `pub-<b>1</b>`,
  failure_reasons: { [`rejected: ${hostile}`]: 2 },
  retry_causes: { [`<img src=x onerror=alert(1)>`]: 3 },
  verification: s.verification === null ? null : {
    ...s.verification,
    checks: s.verification.checks.map((c) => ({ ...c, name: `${c.name} <i>`, detail: `${c.detail} ${hostile}` }))
  }
})

const expectInert = (html: string) => {
  expect(html).not.toMatch(/<script/i)
  expect(html).not.toMatch(/<img/i)
  expect(html).not.toMatch(/<b>|<i>/)
  expect(html).toContain(escapeHtml(hostile))
  expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;")
  // nothing is fetched: no external references at all
  expect(html).not.toMatch(/<[^>]*\s(src|href)=/i)
  expect(html).not.toMatch(/url\(/i)
}

/** A stand-in for the aggregator that acknowledges every event as processed and stores nothing. */
const forgetfulServer = async () => {
  const statsShape = sampleStats()
  const server: Server = createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" })
      res.end(JSON.stringify(body))
    }
    const url = new URL(req.url ?? "/", "http://fake")
    let body = ""
    req.on("data", (d) => (body += d))
    req.on("end", () => {
      if (req.method === "GET" && url.pathname === "/ready") return send(200, { status: "ready", database: "postgresql" })
      if (req.method === "GET" && url.pathname === "/stats") return send(200, { ...statsShape, database_total_rows: 0 })
      if (req.method === "GET" && url.pathname === "/events") return send(200, [])
      if (req.method === "GET" && url.pathname.startsWith("/events/")) {
        return send(404, { error: "not_found", message: "no such event", _tag: "NotFound" })
      }
      if (req.method === "POST" && url.pathname === "/publish") {
        const event = JSON.parse(body)
        return send(201, { status: "processed", id: event.event_id, topic: event.topic })
      }
      send(404, { error: "not_found", message: "no route" })
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanup.push(() =>
    new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  )
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

describe("report rendering", () => {
  it.live("a failed run whose verification could not pass still gets its report, which says FAIL; REPORT_FILE works", () =>
    Effect.gen(function*() {
      const url = yield* Effect.promise(forgetfulServer)
      const file = path.join(dir, "failed.html")
      const run = yield* Effect.promise(() =>
        runPublisher(["--url", url, "--events", "40", "--duplicates", "0", "--json"], { REPORT_FILE: file })
      )
      expect(run.code).toBe(1)
      const summary = JSON.parse(run.stdout)
      expect(summary.ok).toBe(false)
      expect(run.stderr).toContain(`report written to ${file}`)
      expect(run.stderr).toContain("verification failed")
      const html = fs.readFileSync(file, "utf8")
      expect(html).toContain(`<span class="badge fail">FAIL</span>`)
      const failedRows = [...html.matchAll(/<tr class="failed"><td>[^]*?<\/td><td>([^<]*)<\/td>/g)].map((m) => m[1])
      const failedChecks = summary.verification.checks.filter((c: any) => !c.ok).map((c: any) => escapeHtml(c.name))
      expect(failedChecks.length).toBeGreaterThan(0)
      expect(failedRows).toEqual(failedChecks)
      expect(figure(html, "processed")).toBe(summary.processed)
    }), 60_000)

  it.live("a report directory that does not exist is refused before the run", () =>
    Effect.gen(function*() {
      const file = path.join(dir, "no-such-dir", "r.html")
      // nothing listens there: a run would wait for /ready instead of failing at once
      const run = yield* Effect.promise(() =>
        runPublisher(["--url", "http://127.0.0.1:9", "--ready-timeout", "30", "--report", file])
      )
      expect(run.code).not.toBe(0)
      expect(run.stderr).toContain(`the directory ${path.dirname(file)} does not exist`)
      expect(run.stderr).not.toContain("waiting for")
    }), 60_000)

  it.live("--from-json refuses a malformed file with a message that says what is wrong", () =>
    Effect.gen(function*() {
      const out = path.join(dir, "never.html")
      const cases: Array<[string, string, RegExp]> = [
        ["not-json.json", "{ this is not json", /not-json\.json is not JSON/],
        ["wrong.json", JSON.stringify({ url: 42, events: -1 }), /wrong\.json is not a publisher summary[^]*url: Expected string, actual 42[^]*events: /],
        ["array.json", "[1, 2, 3]", /array\.json is not a publisher summary/]
      ]
      for (const [name, content, message] of cases) {
        const file = path.join(dir, name)
        fs.writeFileSync(file, content)
        const run = yield* Effect.promise(() => runPublisher(["--from-json", file, "--report", out]))
        expect(run.code, name).not.toBe(0)
        expect(run.stderr, name).toMatch(message)
        expect(run.stderr, name).not.toMatch(/at .*\.js:\d+/)
        expect(run.stdout, name).toBe("")
      }
      const missing = yield* Effect.promise(() => runPublisher(["--from-json", path.join(dir, "absent.json"), "--report", out]))
      expect(missing.code).not.toBe(0)
      expect(missing.stderr).toMatch(/absent\.json: no such file/)
      const noTarget = yield* Effect.promise(() => runPublisher(["--from-json", path.join(dir, "wrong.json")]))
      expect(noTarget.code).not.toBe(0)
      expect(noTarget.stderr).toContain("--from-json needs --report")
      expect(fs.existsSync(out)).toBe(false)
    }), 60_000)

  it.live("--help describes --report and --from-json", () =>
    Effect.gen(function*() {
      const help = yield* Effect.promise(() => runPublisher(["--help"]))
      expect(help.code).toBe(0)
      for (const text of ["--report", "--from-json", "REPORT_FILE"]) expect(help.stdout).toContain(text)
    }))
})

describe.skipIf(skipWithoutPostgres)(`the report of a run against a live aggregator${withoutPostgresNote}`, () =>
layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("report of a live run", (it) => {
  it.effect("--events 300 --json --report: the page shows the summary's figures and its histogram bar by bar; --from-json gives the same page", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const file = path.join(dir, "r.html")
      const before = Date.now()
      const run = yield* Effect.promise(() => runPublisher(["--url", url, "--events", "300", "--json", "--report", file]))
      expect(run.code, run.stderr).toBe(0)
      const summary = JSON.parse(run.stdout)
      expect(summary.ok).toBe(true)
      expect(run.stderr).toContain(`publisher: report written to ${file}`)

      // the JSON: the histogram accounts for every latency sample, and here every request is one
      const latency = summary.latency_ms
      expect(latency.samples).toBe(summary.requests - summary.failed)
      expect(summary.requests).toBe(300)
      expect(sum(latency.histogram)).toBe(latency.samples)
      expect(latency.histogram.map((b: any) => b.le_ms)).toEqual([...LATENCY_BUCKETS_MS, "+Inf"])
      const p99Bucket = latency.histogram.findIndex((b: any) => b.le_ms === "+Inf" || b.le_ms >= latency.p99)
      expect(sum(latency.histogram.slice(0, p99Bucket + 1))).toBeGreaterThanOrEqual(Math.ceil(0.99 * latency.samples))
      const started = Date.parse(summary.started_at)
      expect(started).toBeGreaterThanOrEqual(before - 1000)
      expect(started).toBeLessThanOrEqual(Date.now())

      // the page
      const html = fs.readFileSync(file, "utf8")
      const title = /<title>([^<]*)<\/title>/.exec(html)![1]
      expect(title).toContain(escapeHtml(url))
      expect(title).toContain(summary.started_at.slice(0, 10))
      expect(html).toContain(`<span class="badge pass">PASS</span>`)
      expect(html).not.toContain(`badge fail`)
      const figures: Record<string, number> = {
        events: summary.events,
        distinct_keys: summary.distinct_keys,
        duplicate_sends: summary.duplicate_sends,
        processed: summary.processed,
        duplicates: summary.duplicates,
        rejected: summary.rejected,
        failed: summary.failed,
        requests: summary.requests,
        retries: summary.retries,
        elapsed_seconds: summary.elapsed_seconds,
        events_per_second: summary.events_per_second,
        p50: latency.p50,
        p95: latency.p95,
        p99: latency.p99,
        max: latency.max,
        latency_samples: latency.samples
      }
      for (const [name, value] of Object.entries(figures)) expect(figure(html, name), name).toBe(value)
      for (const check of summary.verification.checks) {
        expect(html).toContain(`<tr class="ok"><td><span class="badge pass">PASS</span></td><td>${escapeHtml(check.name)}</td>` +
          `<td>${escapeHtml(check.detail)}</td></tr>`)
      }
      const drawn = bars(html)
      expect(drawn).toEqual(latency.histogram)
      expect(sum(drawn)).toBe(latency.samples)
      expect(html).not.toMatch(/<script/i)

      // the saved summary renders to the same page
      const saved = path.join(dir, "summary.json")
      fs.writeFileSync(saved, run.stdout)
      const again = path.join(dir, "again.html")
      const rendered = yield* Effect.promise(() => runPublisher(["--from-json", saved, "--report", again]))
      expect(rendered.code, rendered.stderr).toBe(0)
      expect(rendered.stdout).toBe("")
      expect(rendered.stderr).toContain(`report written to ${again}`)
      expect(fs.readFileSync(again, "utf8")).toBe(html)

      // the server's counters are on the page
      const added = summary.verification.server_stats.added
      expect(figure(html, "stats_processed")).toBe(added.unique_processed)
      expect(figure(html, "stats_received")).toBe(added.received)
      expect(added.unique_processed).toBe(summary.verification.new_keys)
      // --json is the Summary schema encoded (with `ok` beside it): it decodes back to every field printed
      const { ok: _ok, ...printed } = summary
      expect(Schema.decodeUnknownSync(Summary)(printed)).toEqual(printed)
      // a summary without fields every summary has now (as the 0.1.0 tool saved them) is refused, naming them
      const older = path.join(dir, "older.json")
      const { server_stats: _stats, ...olderVerification } = summary.verification
      fs.writeFileSync(older, JSON.stringify({ ...summary, verification: olderVerification }))
      const fromOlder = yield* Effect.promise(() => runPublisher(["--from-json", older, "--report", path.join(dir, "older.html")]))
      expect(fromOlder.code).not.toBe(0)
      expect(fromOlder.stderr).toContain("is not a publisher summary")
      expect(fromOlder.stderr).toContain("verification.server_stats")

      // checks skipped because the server restarted: marked SKIPPED, and the run still passes
      const restarted = "server restarted during the run (started 2025-01-31T12:00:00.000Z, then 2025-01-31T12:05:00.000Z)"
      const skippedPage = renderReport({
        ...summary,
        verification: {
          ...summary.verification,
          server_stats: { ...summary.verification.server_stats, skipped: restarted },
          checks: summary.verification.checks.map((c: any) =>
            c.name.startsWith("server stats") ? { ...c, skipped: true, detail: `skipped: ${restarted}` } : c
          )
        }
      })
      expect(skippedPage).toContain(`<span class="badge pass">PASS</span>`)
      expect(skippedPage).not.toContain(`badge fail`)
      expect(skippedPage).toContain(`server stats not compared: ${escapeHtml(restarted)}`)
      const skippedRows = [...skippedPage.matchAll(/<tr class="skipped"><td><span class="badge skip">SKIPPED<\/span><\/td><td>([^<]*)<\/td>/g)]
      expect(skippedRows.map((m) => m[1])).toEqual([
        "server stats: processed == new keys",
        "server stats: received, duplicates and rejected as answered"
      ])

      // every string that reaches the page is escaped, whether it came from a flag or from the server
      const hostileSummary = path.join(dir, "hostile.json")
      fs.writeFileSync(hostileSummary, JSON.stringify(poisoned(summary)))
      const hostileReport = path.join(dir, "hostile.html")
      const escaped = yield* Effect.promise(() => runPublisher(["--from-json", hostileSummary, "--report", hostileReport]))
      expect(escaped.code, escaped.stderr).toBe(0)
      const page = fs.readFileSync(hostileReport, "utf8")
      expectInert(page)
      expect(page).toBe(renderReport(poisoned(summary)))
      expect(bars(page)).toEqual(latency.histogram)
    }), 120_000)
}))
