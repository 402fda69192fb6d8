import type { Stats } from "../domain/Event.js"

/** Nearest-rank percentile (`p` in (0, 100]) of unsorted samples; undefined when there are none. */
export const percentile = (samples: ArrayLike<number>, p: number): number | undefined => {
  if (samples.length === 0) return undefined
  const sorted = Float64Array.from(samples).sort()
  return sortedPercentile(sorted, p)
}

export const sortedPercentile = (sorted: ArrayLike<number>, p: number): number => {
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]
}

/** Inclusive upper bounds, in ms, of the latency histogram's buckets; one more bucket, "+Inf", takes the rest. */
export const LATENCY_BUCKETS_MS: ReadonlyArray<number> = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

export interface Bucket {
  /** Inclusive upper bound in ms; "+Inf" for the last bucket. */
  readonly le_ms: number | "+Inf"
  /** Samples in this bucket only — above the previous bucket's bound, at most this one's (not cumulative). */
  readonly count: number
}

/** The index of the first bound ≥ `ms` (bounds ascending), or `bounds.length` — the "+Inf" bucket — if none is. */
export const bucketIndex = (ms: number, bounds: ReadonlyArray<number> = LATENCY_BUCKETS_MS): number => {
  let lo = 0, hi = bounds.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (bounds[mid] >= ms) hi = mid
    else lo = mid + 1
  }
  return lo
}

/** Non-cumulative counts of `samples` per bucket of `bounds` (ascending), plus a last "+Inf" bucket. */
export const histogramOf = (
  samples: ArrayLike<number>,
  bounds: ReadonlyArray<number> = LATENCY_BUCKETS_MS
): Array<Bucket> => {
  const counts = new Array<number>(bounds.length + 1).fill(0)
  for (let i = 0; i < samples.length; i++) counts[bucketIndex(samples[i], bounds)]++
  return counts.map((count, i) => ({ le_ms: i < bounds.length ? bounds[i] : "+Inf", count }))
}

export interface Latency {
  readonly p50: number
  readonly p95: number
  readonly p99: number
  readonly max: number
  /** Requests answered (processed, duplicate or rejected), each timed from its first attempt: the samples. */
  readonly samples: number
  /** The samples per bucket of LATENCY_BUCKETS_MS; the counts are per bucket, not cumulative, and sum to `samples`. */
  readonly histogram: ReadonlyArray<Bucket>
}

// The fine histogram: exact to the microsecond below 2,048 µs, then 1,024 buckets per doubling (within 0.1%).
const SUB = 1024
const FINE_BUCKETS = SUB * 22
const MAX_US = 2 ** 31 - 1

const fineIndex = (us: number): number => {
  if (us < 2 * SUB) return us
  const e = 31 - Math.clz32(us) - 10
  return SUB * (e + 1) + ((us >>> e) - SUB)
}

/** The largest value, in µs, of a fine bucket. */
const fineUpper = (index: number): number => {
  if (index < 2 * SUB) return index
  const e = Math.floor(index / SUB) - 1
  return ((index % SUB) + SUB + 1) * 2 ** e - 1
}

/**
 * Latencies in fixed memory however many requests are timed: a fine log-linear histogram for the
 * percentiles (each reported as the top of its bucket, at most the maximum: within 0.1% above the exact
 * nearest-rank value), the report's coarse buckets counted exactly, and the exact maximum.
 */
export class LatencyRecorder {
  readonly #fine = new Float64Array(FINE_BUCKETS)
  readonly #coarse = new Float64Array(LATENCY_BUCKETS_MS.length + 1)
  #count = 0
  #max = 0

  record(ms: number): void {
    const us = Math.min(MAX_US, Math.max(0, Math.ceil(ms * 1000)))
    this.#fine[fineIndex(us)]++
    this.#coarse[bucketIndex(ms)]++
    this.#count++
    if (ms > this.#max) this.#max = ms
  }

  get count(): number {
    return this.#count
  }

  /** Nearest-rank percentile, `p` in (0, 100]; undefined before the first sample. */
  percentile(p: number): number | undefined {
    if (this.#count === 0) return undefined
    const rank = Math.min(this.#count, Math.max(1, Math.ceil((p / 100) * this.#count)))
    let seen = 0
    for (let i = 0; i < FINE_BUCKETS; i++) {
      seen += this.#fine[i]
      if (seen >= rank) return Math.min(this.#max, fineUpper(i) / 1000)
    }
    return this.#max
  }

  summary(): Latency | null {
    if (this.#count === 0) return null
    const round = (ms: number) => Math.round(ms * 100) / 100
    return {
      p50: round(this.percentile(50)!),
      p95: round(this.percentile(95)!),
      p99: round(this.percentile(99)!),
      max: round(this.#max),
      samples: this.#count,
      histogram: Array.from(this.#coarse, (count, i) => ({
        le_ms: i < LATENCY_BUCKETS_MS.length ? LATENCY_BUCKETS_MS[i] : "+Inf" as const,
        count
      }))
    }
  }
}

export const latencyOf = (samples: ArrayLike<number>): Latency | null => {
  const recorder = new LatencyRecorder()
  for (let i = 0; i < samples.length; i++) recorder.record(samples[i])
  return recorder.summary()
}

/** What the publisher counted while sending. A "send" is one event in one request (retries not counted). */
export interface Counts {
  readonly events: number
  readonly distinct_keys: number
  readonly duplicate_sends: number
  readonly requests: number
  readonly retries: number
  readonly processed: number
  readonly duplicates: number
  readonly rejected: number
  readonly failed: number
  /**
   * Sends in attempts that ended with no answer saying what the server did (a timeout, a connection error,
   * an unreadable answer, a 5xx other than 503): the server may have counted them in its stats unseen.
   */
  readonly unanswered_sends: number
  /** Distinct keys answered "processed" at least once. */
  readonly keys_processed: number
  /** Distinct keys answered "processed" more than once: the server stored one twice. */
  readonly keys_processed_twice: number
  /** Distinct keys answered "processed" or "dropped_duplicate" at least once. */
  readonly keys_acknowledged: number
}

/**
 * The `/stats` counters the publisher compares, from its `cluster` section: the sums over every live replica,
 * which behind a load balancer cover the whole run where `uptime_stats` covers only the replica that answered
 * (without a shared broker `cluster` is that replica alone). `started_at` and `uptime_seconds` are the
 * answering replica's.
 */
export interface ServerCounters {
  readonly received: number
  readonly unique_processed: number
  readonly duplicate_dropped: number
  readonly rejected: number
  readonly storage_failures: number
  readonly replicas: number
  readonly started_at: string
  readonly uptime_seconds: number
}

export const countersOf = (stats: Stats): ServerCounters => ({
  ...stats.cluster.uptime_stats,
  storage_failures: stats.cluster.storage_failures,
  replicas: stats.cluster.replicas,
  started_at: stats.started_at,
  uptime_seconds: stats.uptime_seconds
})

const COUNTERS = ["received", "unique_processed", "duplicate_dropped", "rejected", "storage_failures"] as const

/**
 * Why the counters before and after cannot be compared, or null: the only replica was replaced (another
 * process answered), a replica joined or left, or a counter went down (a replica restarted and counts from 0).
 * A restart hidden from all three — one of several replicas restarted, and its replacement took its place
 * within the expiry of its entry — shows as counters that fall short instead.
 */
export const countersRestarted = (before: ServerCounters, after: ServerCounters): string | null => {
  if (before.replicas === 1 && after.replicas === 1 && (after.started_at !== before.started_at || after.uptime_seconds < before.uptime_seconds)) {
    return `server restarted during the run (started ${before.started_at}, then ${after.started_at})`
  }
  if (after.replicas !== before.replicas) {
    return `server replicas changed during the run (${before.replicas} live, then ${after.replicas}), so their summed counters do not compare`
  }
  const fell = COUNTERS.find((k) => after[k] < before[k])
  return fell === undefined
    ? null
    : `server restarted during the run (its ${fell} counter went from ${before[fell]} down to ${after[fell]})`
}

/** What the publisher read back from the server around the run. */
export interface Observation {
  readonly rows_before: number | null
  readonly rows_after: number | null
  /**
   * Keys never answered "processed" that the server nevertheless stored during this run: an attempt
   * committed but its answer was lost (timeout, dropped connection) and the retry was told "duplicate".
   */
  readonly recovered_keys: number
  /** Keys whose storage could not be looked up, so the row check cannot be exact. */
  readonly unresolved_keys: number
  /** Keys the run meant to read back (`--spot-check`); 0 skips the check. */
  readonly spot_wanted: number
  readonly spot_checked: number
  readonly spot_missing: number
  readonly spot_mismatched: number
  /** `/stats` before sending; null when it could not be read. */
  readonly stats_before: ServerCounters | null
  /** `/stats` after the run, re-read while it fell short (`--stats-settle`); null when it could not be read. */
  readonly stats_after: ServerCounters | null
}

export interface Check {
  readonly name: string
  /** True when the check held or was skipped. */
  readonly ok: boolean
  /** Not checked: the detail says why. */
  readonly skipped: boolean
  readonly detail: string
}

/** What the server's counters gained during the run (negative where one went down). */
export type StatsAdded = { readonly [K in typeof COUNTERS[number]]: number }

export interface ServerStats {
  /** Live replicas whose counters were summed, after the run. */
  readonly replicas: number
  readonly added: StatsAdded
  /** Why the stats checks were skipped (the server restarted during the run); null when they ran. */
  readonly skipped: string | null
}

export interface Verification {
  readonly ok: boolean
  readonly rows_before: number | null
  readonly rows_after: number | null
  readonly rows_added: number | null
  /** Keys this run stored: answered "processed", or recovered. */
  readonly new_keys: number
  /** Acknowledged keys that were already stored before the run (a re-run of the same seed). */
  readonly already_stored_keys: number
  readonly spot_checked: number
  /** The server's `/stats` counters over the run; null when they could not be read. */
  readonly server_stats: ServerStats | null
  readonly checks: ReadonlyArray<Check>
}

interface Range {
  readonly min: number
  readonly max: number
}

/**
 * What the server's counters may have gained, from what the publisher was told. Sound for a lone writer:
 * - every answer was counted before it was sent, so each figure is at least what was answered;
 * - the server counts an event once per attempt it decides, so each exceeds the answers by at most the
 *   sends left unanswered (a retry after a lost answer is counted again, usually as a duplicate);
 * - it counts processed once per key it stored, so the keys this run stored, less any written by requests
 *   it counted as storage failures (a commit whose acknowledgement was lost), and no more.
 * Exact when nothing went unanswered and no write failed: processed == new keys, received == processed +
 * duplicates (+ rejected), duplicates == duplicates answered, rejected == 0 when none was answered rejected.
 * Rejected has no lower bound: a whole batch refused (413) is not an event to the server.
 */
const expectedStats = (c: Counts, o: Observation, storageFailures: number) => {
  const newKeys = c.keys_processed + o.recovered_keys
  const answered = c.processed + c.duplicates
  return {
    unique_processed: {
      min: Math.max(c.processed, newKeys - storageFailures),
      max: Math.min(newKeys + o.unresolved_keys, c.processed + c.unanswered_sends)
    },
    received: { min: answered, max: answered + c.rejected + c.unanswered_sends },
    duplicate_dropped: { min: c.duplicates, max: c.duplicates + c.unanswered_sends },
    rejected: { min: 0, max: c.rejected + c.unanswered_sends }
  } satisfies Record<string, Range>
}

const addedBetween = (before: ServerCounters, after: ServerCounters): StatsAdded =>
  Object.fromEntries(COUNTERS.map((k) => [k, after[k] - before[k]])) as StatsAdded

const within = (x: number, r: Range) => x >= r.min && x <= r.max

/**
 * True while the server's counters are short of what the publisher was told and could still catch up: a
 * replica publishes its counters every couple of seconds, and a request whose answer was lost may still be
 * counting. Too high never settles, and a restart makes the figures meaningless: no point waiting for either.
 */
export const statsShort = (c: Counts, o: Observation): boolean => {
  if (o.stats_before === null || o.stats_after === null) return false
  if (countersRestarted(o.stats_before, o.stats_after) !== null) return false
  const added = addedBetween(o.stats_before, o.stats_after)
  const expected = expectedStats(c, o, added.storage_failures)
  return added.unique_processed < expected.unique_processed.min || added.received < expected.received.min ||
    added.duplicate_dropped < expected.duplicate_dropped.min
}

const STATS_PROCESSED = "server stats: processed == new keys"
const STATS_ANSWERS = "server stats: received, duplicates and rejected as answered"

const serverStatsChecks = (c: Counts, o: Observation): { stats: ServerStats | null; checks: Array<Check> } => {
  const newKeys = c.keys_processed + o.recovered_keys
  const { stats_after: after, stats_before: before } = o
  if (before === null || after === null) {
    const detail = `the server's /stats could not be read ${before === null ? "before" : "after"} the run`
    return {
      stats: null,
      checks: [STATS_PROCESSED, STATS_ANSWERS].map((name) => ({ name, ok: false, skipped: false, detail }))
    }
  }
  const added = addedBetween(before, after)
  const restarted = countersRestarted(before, after)
  const stats: ServerStats = { replicas: after.replicas, added, skipped: restarted }
  if (restarted !== null) {
    return {
      stats,
      checks: [STATS_PROCESSED, STATS_ANSWERS].map((name) => ({ name, ok: true, skipped: true, detail: `skipped: ${restarted}` }))
    }
  }
  const e = expectedStats(c, o, added.storage_failures)
  const replicas = `${after.replicas} replica${after.replicas === 1 ? "" : "s"}`
  // the sums of several replicas lag: each publishes its counters every couple of seconds
  const lag = after.replicas > 1 ? ` (${replicas} publish their counters every few seconds; another writer would also explain it)` : ""

  const p = added.unique_processed
  const processedOk = within(p, e.unique_processed)
  const allowances = [
    ...(added.storage_failures > 0
      ? [`${added.storage_failures} events in writes the server counted as failed, which may have committed`]
      : []),
    ...(c.unanswered_sends > 0 ? [`${c.unanswered_sends} sends unanswered`] : []),
    ...(o.unresolved_keys > 0 ? [`${o.unresolved_keys} keys not looked up`] : [])
  ]
  const processedDetail = e.unique_processed.min === newKeys && e.unique_processed.max === newKeys
    ? `+${p} processed (${replicas})${processedOk ? ", matches" : " vs"} ${newKeys} new keys`
    : `+${p} processed (${replicas}), ${processedOk ? "within" : "outside"} ${e.unique_processed.min}–` +
      `${e.unique_processed.max} for ${newKeys} new keys` + (allowances.length > 0 ? ` (${allowances.join("; ")})` : "")

  const figures = [
    ["received", added.received, e.received],
    ["duplicates", added.duplicate_dropped, e.duplicate_dropped],
    ["rejected", added.rejected, e.rejected]
  ] as const
  const answersOk = figures.every(([, x, r]) => within(x, r))
  const expectation = (r: Range) => r.min === r.max ? `${r.min}` : r.min === 0 ? `at most ${r.max}` : `${r.min}–${r.max}`
  const gained = figures.map(([name, x]) => `+${x} ${name}`).join(", ")
  const slack = [
    ...(c.unanswered_sends > 0 ? [`up to ${c.unanswered_sends} more for sends whose answer was lost`] : []),
    ...(c.rejected > 0 ? [`${c.rejected} answered rejected, not each an event to the server`] : [])
  ]
  const answersDetail = `${gained}` + (answersOk
    ? `, as answered${slack.length > 0 ? ` (${slack.join("; ")})` : ""}`
    : `; expected ` + figures.filter(([, x, r]) => !within(x, r)).map(([name, , r]) => `${name} ${expectation(r)}`).join(", "))

  return {
    stats,
    checks: [
      { name: STATS_PROCESSED, ok: processedOk, skipped: false, detail: processedDetail + (processedOk ? "" : lag) },
      { name: STATS_ANSWERS, ok: answersOk, skipped: false, detail: answersDetail + (answersOk ? "" : lag) }
    ]
  }
}

/**
 * The checks, exact for a publisher that is the only writer during its run:
 * - every send got exactly one answer: processed + duplicates == distinct keys + duplicate sends;
 * - the server stored no key twice: no key was answered "processed" more than once;
 * - every distinct key was acknowledged;
 * - database rows added == keys this run stored (those answered "processed", plus recovered ones);
 * - a sample of acknowledged keys reads back with the content that was sent;
 * - the server's `/stats` counters gained what it answered (see `expectedStats`), unless it restarted.
 */
export const verify = (c: Counts, o: Observation): Verification => {
  const rowsAdded = o.rows_before !== null && o.rows_after !== null ? o.rows_after - o.rows_before : null
  const newKeys = c.keys_processed + o.recovered_keys
  const server = serverStatsChecks(c, o)
  const checks: Array<Check> = [
    {
      name: "processed + duplicates == distinct keys + duplicate sends",
      ok: c.processed + c.duplicates === c.distinct_keys + c.duplicate_sends && c.rejected === 0 && c.failed === 0,
      skipped: false,
      detail: `${c.processed} + ${c.duplicates} vs ${c.distinct_keys} + ${c.duplicate_sends}` +
        (c.rejected + c.failed > 0 ? ` (${c.rejected} rejected, ${c.failed} failed)` : "")
    },
    {
      name: "no key processed twice",
      ok: c.keys_processed_twice === 0 && c.keys_processed === c.processed,
      skipped: false,
      detail: `${c.processed} processed answers for ${c.keys_processed} distinct keys` +
        (c.keys_processed_twice > 0 ? `; ${c.keys_processed_twice} keys processed more than once` : "")
    },
    {
      name: "every distinct key acknowledged",
      ok: c.keys_acknowledged === c.distinct_keys,
      skipped: false,
      detail: `${c.keys_acknowledged} of ${c.distinct_keys}`
    },
    {
      name: "database rows added == new keys acknowledged as processed",
      ok: rowsAdded !== null && rowsAdded === newKeys && o.unresolved_keys === 0,
      skipped: false,
      detail: rowsAdded === null
        ? "the server did not report database_total_rows"
        : `${rowsAdded} rows added (${o.rows_before} → ${o.rows_after}) vs ${c.keys_processed} processed` +
          (o.recovered_keys > 0 ? ` + ${o.recovered_keys} recovered` : "") +
          (o.unresolved_keys > 0 ? `; ${o.unresolved_keys} keys could not be looked up` : "")
    },
    ...(o.spot_wanted === 0 ? [] : [{
      name: "sampled keys read back as sent",
      ok: o.spot_missing === 0 && o.spot_mismatched === 0 && (o.spot_checked > 0 || c.keys_acknowledged === 0),
      skipped: false,
      detail: `${o.spot_checked - o.spot_missing - o.spot_mismatched} of ${o.spot_checked} found and equal` +
        (o.spot_missing > 0 ? `; ${o.spot_missing} missing` : "") +
        (o.spot_mismatched > 0 ? `; ${o.spot_mismatched} differ` : "")
    }]),
    ...server.checks
  ]
  return {
    ok: checks.every((check) => check.ok),
    rows_before: o.rows_before,
    rows_after: o.rows_after,
    rows_added: rowsAdded,
    new_keys: newKeys,
    already_stored_keys: Math.max(0, c.keys_acknowledged - newKeys),
    spot_checked: o.spot_checked,
    server_stats: server.stats,
    checks
  }
}

export interface Summary extends Counts {
  readonly url: string
  readonly mode: "single" | "batch"
  readonly batch_size: number | null
  readonly concurrency: number
  readonly seed: number
  readonly run_id: string
  /** When the run started, ISO 8601 UTC. */
  readonly started_at: string
  readonly elapsed_seconds: number
  /** Events answered (processed or duplicate) per second of sending. */
  readonly events_per_second: number
  readonly requests_per_second: number
  readonly latency_ms: Latency | null
  /** Final failures and rejections by reason. */
  readonly failure_reasons: Readonly<Record<string, number>>
  /** Attempts repeated, by what the server or the network answered (e.g. `http 503`, `http 429`, `connection error`). */
  readonly retry_causes: Readonly<Record<string, number>>
  readonly verification: Verification | null
  /** CPU time (user and system) the publisher spent while sending: its own cost, to set against the events. */
  readonly send_cpu_seconds: number
  /** Seconds from the start of the process to its first publish request. */
  readonly startup_seconds: number
  /** The CPU time (user and system) of that start-up: what it costs on an idle machine, waits for /ready aside. */
  readonly startup_cpu_seconds: number
  /** Seconds from the last answer to the summary: the verification's reads and the summary itself. */
  readonly wrapup_seconds: number
  readonly wrapup_cpu_seconds: number
}

/** Exit status: 0 only when nothing finally failed or was rejected and, when verified, every check held. */
export const succeeded = (
  s: Pick<Summary, "failed" | "rejected"> & { readonly verification: { readonly ok: boolean } | null }
): boolean =>
  s.failed === 0 && s.rejected === 0 && (s.verification === null || s.verification.ok)

const n = (x: number) => x.toLocaleString("en-US")
const ms = (x: number) => `${x.toFixed(1)} ms`

export const formatSummary = (s: Summary): string => {
  const lines = [
    `publisher: ${s.mode} mode${s.batch_size !== null ? ` (batches of ${s.batch_size})` : ""}, concurrency ${s.concurrency}, ` +
    `seed ${s.seed} (event ids ${s.run_id}-*), ${s.url}`,
    `  sent         ${n(s.events)} events = ${n(s.distinct_keys)} distinct keys + ${n(s.duplicate_sends)} duplicate sends` +
    ` in ${n(s.requests)} requests, ${n(s.retries)} retries`,
    `  answers      ${n(s.processed)} processed · ${n(s.duplicates)} duplicates · ${n(s.rejected)} rejected · ` +
    `${n(s.failed)} failed`,
    `  elapsed      ${s.elapsed_seconds.toFixed(2)} s · ${n(Math.round(s.events_per_second))} events/s · ` +
    `${n(Math.round(s.requests_per_second))} requests/s`,
    s.latency_ms === null
      ? "  latency      no answers"
      : `  latency      p50 ${ms(s.latency_ms.p50)} · p95 ${ms(s.latency_ms.p95)} · p99 ${ms(s.latency_ms.p99)} · ` +
        `max ${ms(s.latency_ms.max)} (per request, retries included)`,
    `  publisher    ${s.send_cpu_seconds.toFixed(2)} s of CPU while sending, ` +
    `${((1e6 * s.send_cpu_seconds) / Math.max(1, s.events)).toFixed(1)} µs an event`,
    `  timing       first request ${s.startup_seconds.toFixed(2)} s after start (${s.startup_cpu_seconds.toFixed(2)} s of CPU) · ` +
    `summary ${s.wrapup_seconds.toFixed(2)} s after the last answer (${s.wrapup_cpu_seconds.toFixed(2)} s of CPU)`
  ]
  const causes = Object.entries(s.retry_causes)
  if (causes.length > 0) lines.push(`  retries      ${causes.map(([cause, count]) => `${n(count)} × ${cause}`).join(" · ")}`)
  for (const [reason, count] of Object.entries(s.failure_reasons)) lines.push(`  ! ${n(count)} × ${reason}`)
  const v = s.verification
  if (v === null) {
    lines.push("verification: skipped (--no-verify)")
  } else {
    lines.push(
      `verification (exact when this publisher is the only writer): ${n(v.new_keys)} new keys, ` +
        `${n(v.already_stored_keys)} already stored before this run`
    )
    for (const check of v.checks) {
      lines.push(`  ${check.skipped ? "skip" : check.ok ? "ok  " : "FAIL"} ${check.name}: ${check.detail}`)
    }
  }
  lines.push(`result: ${succeeded(s) ? "OK" : "FAILED"}`)
  return lines.join("\n")
}

/** Equality of JSON values, ignoring object key order (jsonb reorders keys). */
export const sameJson = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameJson(x, b[i]))
  const ka = Object.keys(a), kb = Object.keys(b)
  return ka.length === kb.length &&
    ka.every((k) => Object.hasOwn(b, k) && sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}
