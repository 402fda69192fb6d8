import { describe, expect, it, layer } from "@effect/vitest"
import { runPublisher } from "../support/publisher.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { Effect, FastCheck as fc, Schema } from "effect"
import { EventInput } from "../../src/domain/Event.js"
import { progressBar, progressLine } from "../../src/publisher/Progress.js"
import { classify, parseRetryAfter, retryDelay, defaultBackoff, type AttemptFailure } from "../../src/publisher/Retry.js"
import { percentile } from "../../src/publisher/Latency.js"
import { formatSummary } from "../../src/publisher/Render.js"
import type { Counts, StatsAdded, Summary } from "../../src/publisher/Summary.js"
import { type Observation, sameJson, type ServerCounters, statsShort, verify } from "../../src/publisher/Verify.js"
import { duplicateCount, sample } from "../../src/publisher/Workload.js"
import { generateWorkload } from "../support/workload.js"
import { aggregatorLayer, TestAggregator } from "../support/aggregator.js"
import { query } from "../support/database.js"

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

/** A summary of `c` with no latency and no verification yet, for formatting. */
const summaryOf = (c: Counts): Summary => ({
  ...c,
  url: "http://127.0.0.1:8080",
  mode: "single",
  batch_size: null,
  concurrency: 32,
  seed: 1,
  run_id: "pub-1",
  started_at: "2025-01-31T12:00:00.000Z",
  elapsed_seconds: 1,
  events_per_second: 130,
  requests_per_second: 130,
  latency_ms: null,
  failure_reasons: {},
  retry_causes: {},
  verification: null,
  send_cpu_seconds: 0.2,
  startup_seconds: 0.5,
  startup_cpu_seconds: 0.4,
  wrapup_seconds: 0.1,
  wrapup_cpu_seconds: 0.05
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
    unanswered_sends: 0,
    keys_processed: distinct,
    keys_processed_twice: 0,
    keys_acknowledged: distinct
  })
  const startedAt = "2025-01-31T12:00:00.000Z"
  const counters = (x: Partial<ServerCounters> = {}): ServerCounters => ({
    received: 7000,
    unique_processed: 5000,
    duplicate_dropped: 1990,
    rejected: 10,
    storage_failures: 3,
    replicas: 1,
    started_at: startedAt,
    uptime_seconds: 93.4,
    ...x
  })
  /** The counters after `before` gained `added`, some seconds later. */
  const plus = (before: ServerCounters, added: Partial<StatsAdded>): ServerCounters => ({
    ...before,
    received: before.received + (added.received ?? 0),
    unique_processed: before.unique_processed + (added.unique_processed ?? 0),
    duplicate_dropped: before.duplicate_dropped + (added.duplicate_dropped ?? 0),
    rejected: before.rejected + (added.rejected ?? 0),
    storage_failures: before.storage_failures + (added.storage_failures ?? 0),
    uptime_seconds: before.uptime_seconds + 30
  })
  /** What a correct server's counters gain for `c`, each of `recovered` keys stored by an attempt whose answer was lost. */
  const honest = (c: Counts, recovered = 0): StatsAdded => ({
    unique_processed: c.processed + recovered,
    duplicate_dropped: c.duplicates,
    rejected: 0,
    received: c.processed + recovered + c.duplicates,
    storage_failures: 0
  })
  /** The observation of a lone run of `c` against a correct server, rows and stats alike, then `extra`. */
  const observed = (c: Counts, rowsBefore: number, rowsAfter: number | null, extra: Partial<Observation> = {}): Observation => {
    const before = counters()
    return {
      rows_before: rowsBefore,
      rows_after: rowsAfter,
      recovered_keys: 0,
      unresolved_keys: 0,
      spot_wanted: 10,
      spot_checked: 10,
      spot_missing: 0,
      spot_mismatched: 0,
      stats_before: before,
      stats_after: plus(before, honest(c, extra.recovered_keys ?? 0)),
      ...extra
    }
  }
  const failing = (c: Counts, o: Observation) => verify(c, o).checks.filter((x) => !x.ok).map((x) => x.name)
  const STATS_PROCESSED = "server stats: processed == new keys"
  const STATS_ANSWERS = "server stats: received, duplicates and rejected as answered"

  it.prop(
    "a lone run verifies exactly when rows added == keys answered processed + recovered keys",
    [fc.integer({ min: 1, max: 100_000 }), fc.integer({ min: 0, max: 50_000 }), fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: -3, max: 3 }), fc.nat(100)],
    ([distinct, dups, before, off, lost]) => {
      fc.pre(lost <= distinct)
      // `lost` keys had their "processed" answer lost to a retry, which was told "duplicate"
      const c = {
        ...lone(distinct, dups),
        processed: distinct - lost,
        duplicates: dups + lost,
        keys_processed: distinct - lost,
        unanswered_sends: lost
      }
      const v = verify(c, observed(c, before, before + distinct + off, { recovered_keys: lost }))
      expect(v.ok).toBe(off === 0)
      expect(v.new_keys).toBe(distinct)
      expect(v.already_stored_keys).toBe(0)
      expect(v.server_stats).toEqual({
        replicas: 1,
        added: { unique_processed: distinct, duplicate_dropped: dups + lost, rejected: 0, received: distinct + dups + lost, storage_failures: 0 },
        skipped: null
      })
    }
  )

  it("a re-run of the same seed: all duplicates, no rows added, still verified", () => {
    const c = { ...lone(100, 30), processed: 0, duplicates: 130, keys_processed: 0 }
    const v = verify(c, observed(c, 500, 500))
    expect(v.ok).toBe(true)
    expect(v.already_stored_keys).toBe(100)
    expect(v.server_stats?.added).toMatchObject({ unique_processed: 0, duplicate_dropped: 130 })
  })

  it("each kind of disagreement fails its check", () => {
    const c = lone(100, 30)
    expect(failing(c, observed(c, 0, 100))).toEqual([])
    expect(failing(c, observed(c, 0, 0))).toEqual(["database rows added == new keys acknowledged as processed"])
    expect(failing(c, observed(c, 0, 100, { spot_missing: 1 }))).toEqual(["sampled keys read back as sent"])
    expect(failing(c, observed(c, 0, 100, { spot_checked: 0 }))).toEqual(["sampled keys read back as sent"])
    expect(verify(c, observed(c, 0, 100, { spot_wanted: 0, spot_checked: 0 })).ok).toBe(true)
    expect(failing(c, observed(c, 0, null))).toEqual(["database rows added == new keys acknowledged as processed"])
    const twice = { ...c, processed: 101, keys_processed_twice: 1, duplicates: 29 }
    // the server counts what it answered: 101 processed for 100 new keys
    expect(failing(twice, observed(twice, 0, 100))).toEqual(["no key processed twice", STATS_PROCESSED])
    const failed = { ...c, duplicates: 29, failed: 1 }
    expect(failing(failed, observed(failed, 0, 100))).toEqual(["processed + duplicates == distinct keys + duplicate sends"])
    const lost = { ...c, processed: 99, keys_processed: 99, duplicates: 30, failed: 1, keys_acknowledged: 99 }
    expect(failing(lost, observed(lost, 0, 99))).toEqual([
      "processed + duplicates == distinct keys + duplicate sends",
      "every distinct key acknowledged"
    ])
  })

  it.prop(
    "server stats, nothing unanswered: processed, duplicates and received must match exactly; a rejection fails",
    [fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 0, max: 5_000 }), fc.integer({ min: -3, max: 3 }), fc.integer({ min: -3, max: 3 }), fc.nat(2)],
    ([distinct, dups, processedOff, duplicatesOff, rejected]) => {
      // a counter that went down would be a restart
      fc.pre(dups + duplicatesOff >= 0 && distinct + processedOff >= 0)
      const c = lone(distinct, dups)
      const o = observed(c, 0, distinct)
      const added = { ...honest(c), unique_processed: distinct + processedOff, duplicate_dropped: dups + duplicatesOff, rejected }
      added.received = added.unique_processed + added.duplicate_dropped + rejected
      const failed = failing(c, { ...o, stats_after: plus(o.stats_before!, added) })
      expect(failed.includes(STATS_PROCESSED)).toBe(processedOff !== 0)
      expect(failed.includes(STATS_ANSWERS)).toBe(duplicatesOff !== 0 || rejected !== 0 || processedOff !== 0)
      expect(failed.filter((name) => !name.startsWith("server stats"))).toEqual([])
    }
  )

  it.prop(
    "server stats after lost answers: the server may count each unanswered send once more, never more, never less than answered",
    [fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 0, max: 5_000 }), fc.nat(50), fc.integer({ min: -2, max: 60 })],
    ([distinct, dups, unanswered, extra]) => {
      fc.pre(dups + extra >= 0)
      // every answer arrived in the end, after `unanswered` sends had been retried
      const c = { ...lone(distinct, dups), unanswered_sends: unanswered }
      const o = observed(c, 0, distinct)
      const added = { ...honest(c), duplicate_dropped: dups + extra, received: distinct + dups + extra }
      const v = verify(c, { ...o, stats_after: plus(o.stats_before!, added) })
      const answers = v.checks.find((x) => x.name === STATS_ANSWERS)!
      expect(answers.ok).toBe(extra >= 0 && extra <= unanswered)
      if (answers.ok && unanswered > 0) expect(answers.detail).toContain(`up to ${unanswered} more for sends whose answer was lost`)
      expect(v.checks.find((x) => x.name === STATS_PROCESSED)!.ok).toBe(true)
    }
  )

  it("server stats: a write counted as a storage failure may have committed uncounted, and no more than that", () => {
    // 5 keys stored by writes the server reported failed (503): the retries were told duplicate, the lookups found them
    const c = { ...lone(100, 30), processed: 95, keys_processed: 95, duplicates: 35 }
    const o = observed(c, 0, 100, { recovered_keys: 5 })
    const withFailures = (failures: number, processed: number) =>
      verify(c, { ...o, stats_after: plus(o.stats_before!, { unique_processed: processed, duplicate_dropped: 35, received: processed + 35, storage_failures: failures }) })
    expect(withFailures(5, 95).ok).toBe(true)
    expect(withFailures(5, 95).checks.find((x) => x.name === STATS_PROCESSED)!.detail).toContain("5 events in writes the server counted as failed")
    expect(withFailures(8, 95).ok).toBe(true)
    expect(withFailures(4, 95).checks.filter((x) => !x.ok).map((x) => x.name)).toEqual([STATS_PROCESSED])
    // more than were answered processed: a 503 write is never counted as processed (received moves with it)
    expect(withFailures(5, 96).checks.filter((x) => !x.ok).map((x) => x.name)).toEqual([STATS_PROCESSED, STATS_ANSWERS])
  })

  it("server stats: a restart or a change of replicas skips the stats checks, it does not fail them", () => {
    const c = lone(100, 30)
    const o = observed(c, 0, 100)
    const before = o.stats_before!
    const skippedBy = (after: ServerCounters, from: ServerCounters = before) => {
      const v = verify(c, { ...o, stats_before: from, stats_after: after })
      const stats = v.checks.filter((x) => x.name.startsWith("server stats"))
      expect(stats).toHaveLength(2)
      return { v, stats, skipped: stats.every((x) => x.skipped && x.ok) }
    }
    // the only replica replaced: its counters start again from 0
    const replaced = skippedBy({ ...counters({ received: 40, unique_processed: 30, duplicate_dropped: 10, rejected: 0, storage_failures: 0 }), started_at: "2025-01-31T12:05:00.000Z", uptime_seconds: 4 })
    expect(replaced.skipped).toBe(true)
    expect(replaced.v.ok).toBe(true)
    expect(replaced.v.server_stats?.skipped).toMatch(/^server restarted during the run \(started 2025-01-31T12:00:00.000Z, then 2025-01-31T12:05:00.000Z\)/)
    expect(replaced.stats[0].detail).toMatch(/^skipped: server restarted during the run/)
    expect(formatSummary({ ...summaryOf(c), verification: replaced.v })).toContain(
      "  skip server stats: processed == new keys: skipped: server restarted during the run"
    )
    // the same process cannot have less uptime
    expect(skippedBy({ ...plus(before, honest(c)), uptime_seconds: before.uptime_seconds - 1 }).skipped).toBe(true)
    // a replica joined or left: the sums cover other processes
    expect(skippedBy({ ...plus(before, honest(c)), replicas: 2 }).v.server_stats?.skipped).toMatch(/replicas changed during the run \(1 live, then 2\)/)
    // several replicas: another one answering is not a restart, but a counter going down is
    const cluster = { ...before, replicas: 3 }
    const otherReplica = verify(c, { ...o, stats_before: cluster, stats_after: { ...plus(cluster, honest(c)), started_at: "2025-01-31T11:00:00.000Z", uptime_seconds: 5 } })
    expect(otherReplica.ok).toBe(true)
    expect(otherReplica.checks.some((x) => x.skipped)).toBe(false)
    expect(otherReplica.checks.find((x) => x.name === STATS_PROCESSED)!.detail).toBe("+100 processed (3 replicas), matches 100 new keys")
    const fell = skippedBy({ ...plus(cluster, honest(c)), received: cluster.received - 1 }, cluster)
    expect(fell.skipped).toBe(true)
    expect(fell.v.server_stats?.skipped).toMatch(/server restarted during the run \(its received counter went from 7000 down to 6999\)/)
    // and a disagreement among several replicas says that their sums lag
    const short = verify(c, { ...o, stats_before: cluster, stats_after: plus(cluster, { ...honest(c), unique_processed: 90 }) })
    expect(short.checks.find((x) => x.name === STATS_PROCESSED)).toMatchObject({
      ok: false,
      skipped: false,
      detail: expect.stringMatching(/^\+90 processed \(3 replicas\) vs 100 new keys \(3 replicas publish their counters every few seconds/)
    })
  })

  it("server stats unreadable: both stats checks fail and say so", () => {
    const c = lone(100, 30)
    for (const missing of ["stats_before", "stats_after"] as const) {
      const v = verify(c, { ...observed(c, 0, 100), [missing]: null })
      expect(v.ok).toBe(false)
      expect(v.server_stats).toBeNull()
      expect(v.checks.filter((x) => !x.ok).map((x) => x.detail)).toEqual([
        `the server's /stats could not be read ${missing === "stats_before" ? "before" : "after"} the run`,
        `the server's /stats could not be read ${missing === "stats_before" ? "before" : "after"} the run`
      ])
    }
  })

  it("statsShort: worth re-reading only while a figure is below what was answered, not above it, not after a restart", () => {
    const c = lone(100, 30)
    const o = observed(c, 0, 100)
    const after = (added: Partial<StatsAdded>, x: Partial<ServerCounters> = {}) => ({ ...o, stats_after: { ...plus(o.stats_before!, added), ...x } })
    expect(statsShort(c, o)).toBe(false)
    expect(statsShort(c, after({ ...honest(c), unique_processed: 99, received: 129 }))).toBe(true)
    expect(statsShort(c, after({ ...honest(c), duplicate_dropped: 29, received: 129 }))).toBe(true)
    expect(statsShort(c, after({ ...honest(c), unique_processed: 101, received: 131 }))).toBe(false)
    expect(statsShort(c, after({}, { started_at: "2025-01-31T12:05:00.000Z" }))).toBe(false)
    expect(statsShort(c, { ...o, stats_after: null })).toBe(false)
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
        verification: {
          ok: true,
          rows_added: 1400,
          new_keys: 1400,
          already_stored_keys: 0,
          // the server's own counters agree: one processed per new key, one duplicate per re-send
          server_stats: {
            replicas: 1,
            added: { unique_processed: 1400, duplicate_dropped: 600, rejected: 0, received: 2000, storage_failures: 0 },
            skipped: null
          }
        }
      })
      expect(summary.verification.checks.filter((c: any) => c.name.startsWith("server stats"))).toEqual([
        { name: "server stats: processed == new keys", ok: true, skipped: false, detail: "+1400 processed (1 replica), matches 1400 new keys" },
        {
          name: "server stats: received, duplicates and rejected as answered",
          ok: true,
          skipped: false,
          detail: "+2000 received, +600 duplicates, +0 rejected, as answered"
        }
      ])
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
        verification: {
          ok: true,
          rows_added: 0,
          new_keys: 0,
          already_stored_keys: 1400,
          server_stats: { added: { unique_processed: 0, duplicate_dropped: 2000, rejected: 0, received: 2000 }, skipped: null }
        }
      })
      expect(yield* distinctRows(databaseUrl, summary.run_id)).toBe(1400)
    }), { timeout: 180_000 })

  it.effect.each([
    ["the client library (the default)", []],
    ["the send loop (--send-loop)", ["--send-loop"]]
  ] as const)("batch mode through %s, 2,000 events, 30% duplicates, a fresh seed: verified, one row per distinct key", ([, via]) =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* TestAggregator
      const run = yield* Effect.promise(() =>
        runPublisher(["--url", url, "--events", "2000", "--duplicates", "0.3", "--mode", "batch", "--batch-size", "250", ...via])
      )
      expect(run.code, run.stderr).toBe(0)
      expect(run.stdout).toContain("result: OK")
      expect(run.stdout).toMatch(/1,400 processed · 600 duplicates · 0 rejected · 0 failed/)
      expect(run.stdout).toMatch(/ok {3}database rows added == new keys acknowledged as processed: 1400 rows added/)
      expect(run.stdout).toContain("  ok   server stats: processed == new keys: +1400 processed (1 replica), matches 1400 new keys")
      expect(run.stdout).toContain("  ok   server stats: received, duplicates and rejected as answered: +2000 received, +600 duplicates, +0 rejected, as answered")
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
