import { describe, expect, it, layer } from "@effect/vitest"
import { runPublisher } from "./support/publisher.js"
import { skipWithoutPostgres, withoutPostgresNote } from "./support/backends.js"
import { Effect, FastCheck as fc, Schema } from "effect"
import { EventInput } from "../src/domain/Event.js"
import { progressBar, progressLine } from "../src/publisher/Progress.js"
import { classify, parseRetryAfter, retryDelay, defaultBackoff, type AttemptFailure } from "../src/publisher/Retry.js"
import { type Counts, type Observation, percentile, sameJson, verify } from "../src/publisher/Summary.js"
import { duplicateCount, generateWorkload, sample } from "../src/publisher/Workload.js"
import { aggregatorLayer, TestAggregator } from "./support/aggregator.js"
import { query } from "./support/database.js"

// vitest itself sets MODE=test; the publisher must see only the flags each test passes

const workloadOptions = fc.record({
  seed: fc.integer({ min: 0, max: 2 ** 47 }),
  events: fc.integer({ min: 1, max: 3000 }),
  duplicates: fc.double({ min: 0, max: 0.99, noNaN: true }),
  topics: fc.integer({ min: 1, max: 20 })
})

describe("workload", () => {
  it.prop("exact count, duplicates within rounding, each duplicate an exact copy of an earlier event", [workloadOptions], ([o]) => {
    const w = generateWorkload(o)
    expect(w.items.length).toBe(o.events)
    const dups = w.items.filter((i) => i.duplicate).length
    expect(dups).toBe(w.duplicateSends)
    expect(w.distinctKeys + w.duplicateSends).toBe(o.events)
    // round(events × fraction), except that the first event cannot be a duplicate
    expect(Math.abs(dups - o.events * o.duplicates) <= 0.5 || dups === o.events - 1).toBe(true)
    expect(w.distinctKeys).toBeGreaterThanOrEqual(1)

    const firstSeen = new Map<number, number>()
    w.items.forEach((item, position) => {
      if (!item.duplicate) {
        expect(firstSeen.has(item.key)).toBe(false)
        expect(item.key).toBe(firstSeen.size)
        firstSeen.set(item.key, position)
      } else {
        const original = firstSeen.get(item.key)
        expect(original).toBeDefined()
        expect(original!).toBeLessThan(position)
        expect(item.event).toEqual(w.items[original!].event)
      }
      expect(item.event).toEqual(w.originals[item.key])
    })
    const ids = new Set(w.originals.map((e) => `${e.topic}/${e.event_id}`))
    expect(ids.size).toBe(w.distinctKeys)
    expect(new Set(w.originals.map((e) => e.topic)).size).toBeLessThanOrEqual(o.topics)
    for (const e of w.originals) expect(e.event_id.startsWith(`${w.runId}-`)).toBe(true)
  })

  it.prop("the same seed gives the same workload; another seed other keys", [workloadOptions, fc.integer({ min: 0, max: 2 ** 47 })], ([o, other]) => {
    expect(generateWorkload(o)).toEqual(generateWorkload(o))
    fc.pre(other !== o.seed)
    const a = new Set(generateWorkload(o).originals.map((e) => e.event_id))
    for (const e of generateWorkload({ ...o, seed: other }).originals) expect(a.has(e.event_id)).toBe(false)
  })

  it.prop("events are valid for the aggregator's schema, timestamps in its stored form", [workloadOptions], ([o]) => {
    const w = generateWorkload({ ...o, events: Math.min(o.events, 200) })
    for (const e of w.originals) {
      expect(Schema.decodeUnknownEither(EventInput)(e)._tag).toBe("Right")
      expect(e.timestamp).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/)
    }
  })

  it.prop("duplicateCount leaves at least one original", [fc.integer({ min: 1, max: 10_000 }), fc.double({ min: 0, max: 1, noNaN: true })], ([n, f]) => {
    const d = duplicateCount(n, f)
    expect(d).toBeGreaterThanOrEqual(0)
    expect(d).toBeLessThanOrEqual(n - 1)
  })

  it.prop("sample: distinct indices in range, min(n, count) of them, reproducible", [fc.integer({ min: 0, max: 500 }), fc.integer({ min: 0, max: 600 }), fc.integer({ min: 0, max: 2 ** 40 })], ([n, count, seed]) => {
    const s = sample(n, count, seed)
    expect(s.length).toBe(Math.min(n, count))
    expect(new Set(s).size).toBe(s.length)
    for (const k of s) expect(k >= 0 && k < n).toBe(true)
    expect(sample(n, count, seed)).toEqual(s)
  })
})

describe("percentiles", () => {
  const samples = fc.array(fc.double({ min: 0, max: 1e6, noNaN: true }), { minLength: 1, maxLength: 500 })
  const p = fc.double({ min: 0.001, max: 100, noNaN: true })

  it.prop("nearest rank: a sample value with at least p% of samples at or below it and fewer than p% below", [samples, p], ([xs, q]) => {
    const v = percentile(xs, q)!
    expect(xs).toContain(v)
    const atOrBelow = xs.filter((x) => x <= v).length
    const below = xs.filter((x) => x < v).length
    expect(atOrBelow).toBeGreaterThanOrEqual(Math.ceil((q / 100) * xs.length) - 1e-9)
    expect(below).toBeLessThan(Math.max(1, Math.ceil((q / 100) * xs.length)))
  })

  it.prop("monotone in p, p100 is the maximum", [samples, p, p], ([xs, a, b]) => {
    const [lo, hi] = a <= b ? [a, b] : [b, a]
    expect(percentile(xs, lo)!).toBeLessThanOrEqual(percentile(xs, hi)!)
    expect(percentile(xs, 100)).toBe(Math.max(...xs))
  })

  it("no samples, no percentile", () => {
    expect(percentile([], 50)).toBeUndefined()
  })
})

describe("retry classification and backoff", () => {
  const status = (s: number, retryAfter?: string): AttemptFailure => ({ _tag: "Status", status: s, retryAfter })

  it("connection errors, timeouts, 429 and 502–504 are retried; other 4xx rejected; 500 and bad answers final", () => {
    expect(classify({ _tag: "Transport", message: "ECONNREFUSED" })).toBe("retry")
    expect(classify({ _tag: "Timeout" })).toBe("retry")
    for (const s of [429, 502, 503, 504]) expect(classify(status(s))).toBe("retry")
    for (const s of [400, 404, 405, 413, 415, 422]) expect(classify(status(s))).toBe("rejected")
    expect(classify(status(500))).toBe("failed")
    expect(classify({ _tag: "Invalid", message: "x" })).toBe("failed")
  })

  it.prop("4xx other than 429 is never retried", [fc.integer({ min: 400, max: 499 })], ([s]) => {
    expect(classify(status(s))).toBe(s === 429 ? "retry" : "rejected")
  })

  it("Retry-After: delta seconds or an HTTP date", () => {
    const now = Date.UTC(2025, 0, 1, 0, 0, 0)
    expect(parseRetryAfter("3", now)).toBe(3000)
    expect(parseRetryAfter(" 0 ", now)).toBe(0)
    expect(parseRetryAfter(new Date(now + 5000).toUTCString(), now)).toBe(5000)
    expect(parseRetryAfter(new Date(now - 5000).toUTCString(), now)).toBe(0)
    expect(parseRetryAfter("soon", now)).toBeUndefined()
    expect(parseRetryAfter(undefined, now)).toBeUndefined()
  })

  it.prop(
    "the delay grows with the retry up to the cap, jitter keeps at least half, Retry-After is a floor",
    [fc.integer({ min: 0, max: 40 }), fc.double({ min: 0, max: 0.9999, noNaN: true }), fc.option(fc.integer({ min: 0, max: 120_000 }), { nil: undefined })],
    ([retry, jitter, retryAfter]) => {
      const d = retryDelay(defaultBackoff, retry, jitter, retryAfter)
      const exp = Math.min(defaultBackoff.maxDelayMs, defaultBackoff.baseMs * 2 ** retry)
      expect(d).toBeGreaterThanOrEqual(exp / 2)
      expect(d).toBeGreaterThanOrEqual(Math.min(retryAfter ?? 0, defaultBackoff.maxRetryAfterMs))
      expect(d).toBeLessThanOrEqual(Math.max(exp, Math.min(retryAfter ?? 0, defaultBackoff.maxRetryAfterMs)))
      expect(retryDelay(defaultBackoff, retry + 1, jitter, undefined)).toBeGreaterThanOrEqual(retryDelay(defaultBackoff, retry, jitter, undefined))
    }
  )
})

describe("verification arithmetic", () => {
  const lone = (distinct: number, duplicateSends: number): Counts => ({
    events: distinct + duplicateSends,
    distinct_keys: distinct,
    duplicate_sends: duplicateSends,
    requests: distinct + duplicateSends,
    retries: 0,
    processed: distinct,
    duplicates: duplicateSends,
    rejected: 0,
    failed: 0,
    keys_processed: distinct,
    keys_processed_twice: 0,
    keys_acknowledged: distinct
  })
  const observed = (rowsBefore: number, rowsAfter: number, extra: Partial<Observation> = {}): Observation => ({
    rows_before: rowsBefore,
    rows_after: rowsAfter,
    recovered_keys: 0,
    unresolved_keys: 0,
    spot_wanted: 10,
    spot_checked: 10,
    spot_missing: 0,
    spot_mismatched: 0,
    ...extra
  })

  it.prop(
    "a lone run verifies exactly when rows added == keys answered processed + recovered keys",
    [fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 0, max: 50_000 }), fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: -3, max: 3 }), fc.nat(100)],
    ([distinct, dups, before, off, lost]) => {
      fc.pre(lost <= distinct)
      // `lost` keys had their "processed" answer lost to a retry, which was told "duplicate"
      const c = { ...lone(distinct, dups), processed: distinct - lost, duplicates: dups + lost, keys_processed: distinct - lost }
      const v = verify(c, observed(before, before + distinct + off, { recovered_keys: lost }))
      expect(v.ok).toBe(off === 0)
      expect(v.new_keys).toBe(distinct)
      expect(v.already_stored_keys).toBe(0)
    }
  )

  it("a re-run of the same seed: all duplicates, no rows added, still verified", () => {
    const c = { ...lone(100, 30), processed: 0, duplicates: 130, keys_processed: 0 }
    const v = verify(c, observed(500, 500))
    expect(v.ok).toBe(true)
    expect(v.already_stored_keys).toBe(100)
  })

  it("each kind of disagreement fails its check", () => {
    const c = lone(100, 30)
    const failing = (counts: Counts, o: Observation) => verify(counts, o).checks.filter((x) => !x.ok).map((x) => x.name)
    expect(failing(c, observed(0, 100))).toEqual([])
    expect(failing(c, observed(0, 0))).toEqual(["database rows added == new keys acknowledged as processed"])
    expect(failing(c, observed(0, 100, { spot_missing: 1 }))).toEqual(["sampled keys read back as sent"])
    expect(failing(c, observed(0, 100, { spot_checked: 0 }))).toEqual(["sampled keys read back as sent"])
    expect(verify(c, observed(0, 100, { spot_wanted: 0, spot_checked: 0 })).ok).toBe(true)
    expect(failing(c, { ...observed(0, 100), rows_after: null })).toEqual(["database rows added == new keys acknowledged as processed"])
    expect(failing({ ...c, processed: 101, keys_processed_twice: 1, duplicates: 29 }, observed(0, 100))).toEqual(["no key processed twice"])
    expect(failing({ ...c, duplicates: 29, failed: 1 }, observed(0, 100))).toEqual(["processed + duplicates == distinct keys + duplicate sends"])
    expect(failing({ ...c, processed: 99, keys_processed: 99, duplicates: 30, failed: 1, keys_acknowledged: 99 }, observed(0, 99))).toEqual([
      "processed + duplicates == distinct keys + duplicate sends",
      "every distinct key acknowledged"
    ])
  })
})

describe("sameJson", () => {
  const shuffleKeys = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(shuffleKeys)
    if (v !== null && typeof v === "object") {
      return Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, shuffleKeys(x)]))
    }
    return v
  }
  it.prop("equal regardless of key order; a changed leaf is noticed", [fc.jsonValue()], ([v]) => {
    const value = JSON.parse(JSON.stringify(v))
    expect(sameJson(value, shuffleKeys(value))).toBe(true)
    expect(sameJson({ x: value }, { x: value, y: 1 })).toBe(false)
    expect(sameJson([value], [value, null])).toBe(false)
  })
})

describe("progress", () => {
  it.prop("the bar fills in proportion and never overflows", [fc.nat(50_000), fc.integer({ min: 1, max: 50_000 }), fc.nat(600_000)], ([done, total, elapsedMs]) => {
    const bar = progressBar({ done, total, elapsedMs, retries: 0, problems: 0 }, 30)
    const inside = /^\[([#-]{30})\]/.exec(bar)![1]
    expect(inside.replace(/-/g, "").length).toBe(Math.round(Math.min(1, done / total) * 30))
  })

  it("a line for logs says how far, how fast and what went wrong", () => {
    const line = progressLine({ done: 9000, total: 20000, elapsedMs: 4500, retries: 3, problems: 1 })
    expect(line).toBe("progress 9,000/20,000 events (45.0%) · 4.5 s · 2,000 events/s · 3 retries · 1 failed or rejected")
  })
})

const distinctRows = (databaseUrl: string, runId: string) =>
  Effect.promise(() =>
    query<{ n: number }>(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE event_id LIKE $1", [`${runId}-%`])
  ).pipe(Effect.map((rows) => rows[0].n))

describe.skipIf(skipWithoutPostgres)(`publisher against a live aggregator${withoutPostgresNote}`, () =>
layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("publisher against a live aggregator", (it) => {
  it.effect("single mode, 2,000 events, 30% duplicates: verified, one row per distinct key; the same seed again is all duplicates", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const seed = String(Date.now())
      const run = yield* Effect.promise(() =>
        runPublisher(["--url", url, "--events", "2000", "--duplicates", "0.3", "--mode", "single", "--seed", seed, "--json"])
      )
      expect(run.code, run.stderr).toBe(0)
      const summary = JSON.parse(run.stdout)
      expect(summary).toMatchObject({
        ok: true,
        mode: "single",
        events: 2000,
        distinct_keys: 1400,
        duplicate_sends: 600,
        requests: 2000,
        processed: 1400,
        duplicates: 600,
        rejected: 0,
        failed: 0,
        verification: { ok: true, rows_added: 1400, new_keys: 1400, already_stored_keys: 0 }
      })
      for (const field of ["elapsed_seconds", "events_per_second", "retries", "seed", "run_id"]) expect(summary).toHaveProperty(field)
      for (const field of ["p50", "p95", "p99"]) expect(typeof summary.latency_ms[field]).toBe("number")
      expect(summary.latency_ms.p50).toBeLessThanOrEqual(summary.latency_ms.p95)
      expect(summary.latency_ms.p95).toBeLessThanOrEqual(summary.latency_ms.p99)
      expect(yield* distinctRows(databaseUrl, summary.run_id)).toBe(1400)

      const again = yield* Effect.promise(() =>
        runPublisher(["--url", url, "--events", "2000", "--mode", "batch", "--batch-size", "300", "--seed", seed, "--json"])
      )
      expect(again.code, again.stderr).toBe(0)
      expect(JSON.parse(again.stdout)).toMatchObject({
        ok: true,
        run_id: summary.run_id,
        requests: 7,
        processed: 0,
        duplicates: 2000,
        verification: { ok: true, rows_added: 0, new_keys: 0, already_stored_keys: 1400 }
      })
      expect(yield* distinctRows(databaseUrl, summary.run_id)).toBe(1400)
    }), { timeout: 180_000 })

  it.effect("batch mode, 2,000 events, 30% duplicates, a fresh seed: verified, one row per distinct key", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const run = yield* Effect.promise(() =>
        runPublisher(["--url", url, "--events", "2000", "--duplicates", "0.3", "--mode", "batch", "--batch-size", "250"])
      )
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toContain("result: OK")
      expect(run.stdout).toMatch(/1,400 processed · 600 duplicates · 0 rejected · 0 failed/)
      expect(run.stdout).toMatch(/ok {3}database rows added == new keys acknowledged as processed: 1400 rows added/)
      const runId = /event ids (\S+)-\*/.exec(run.stdout)![1]
      expect(yield* distinctRows(databaseUrl, runId)).toBe(1400)
      expect(run.stderr).toMatch(/progress 2,000\/2,000 events/)
    }), { timeout: 180_000 })

  it.effect("a bad option is a usage error, not a run", () =>
    Effect.gen(function*() {
      const { url } = yield* TestAggregator
      const run = yield* Effect.promise(() => runPublisher(["--url", url, "--duplicates", "1.5"]))
      expect(run.code).not.toBe(0)
      expect(run.stdout + run.stderr).toContain("--duplicates")
      const help = yield* Effect.promise(() => runPublisher(["--help"]))
      expect(help.code).toBe(0)
      expect(help.stdout).toContain("--batch-size")
      expect(help.stdout).toContain("AGGREGATOR_URL")
    }))
}))
