import type { Stats } from "../domain/Event.js"
import type { Check, Counts, ServerStats, StatsAdded, Verification } from "./Summary.js"

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
