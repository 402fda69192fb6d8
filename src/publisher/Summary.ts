import * as Schema from "effect/Schema"
import { UptimeStats } from "../domain/Event.js"

// What a run found, as one Schema: the text and HTML renderings read it, `--json` prints it encoded and
// `--from-json` decodes it back.

const Count = Schema.NonNegativeInt
const CountsByReason = Schema.Record({ key: Schema.String, value: Count })

export const Bucket = Schema.Struct({
  /** Inclusive upper bound in ms; "+Inf" for the last bucket. */
  le_ms: Schema.Union(Schema.Number, Schema.Literal("+Inf")),
  /** Samples in this bucket only — above the previous bucket's bound, at most this one's (not cumulative). */
  count: Count
})
export type Bucket = typeof Bucket.Type

export const Latency = Schema.Struct({
  p50: Schema.Number,
  p95: Schema.Number,
  p99: Schema.Number,
  max: Schema.Number,
  /** Requests answered (processed, duplicate or rejected), each timed from its first attempt: the samples. */
  samples: Count,
  /** The samples per bucket of LATENCY_BUCKETS_MS; the counts are per bucket, not cumulative, and sum to `samples`. */
  histogram: Schema.Array(Bucket)
})
export type Latency = typeof Latency.Type

/** What the publisher counted while sending. A "send" is one event in one request (retries not counted). */
export const Counts = Schema.Struct({
  events: Count,
  distinct_keys: Count,
  duplicate_sends: Count,
  requests: Count,
  retries: Count,
  processed: Count,
  duplicates: Count,
  rejected: Count,
  failed: Count,
  /**
   * Sends in attempts that ended with no answer saying what the server did (a timeout, a connection error,
   * an unreadable answer, a 5xx other than 503): the server may have counted them in its stats unseen.
   */
  unanswered_sends: Count,
  /** Distinct keys answered "processed" at least once. */
  keys_processed: Count,
  /** Distinct keys answered "processed" more than once: the server stored one twice. */
  keys_processed_twice: Count,
  /** Distinct keys answered "processed" or "dropped_duplicate" at least once. */
  keys_acknowledged: Count
})
export type Counts = typeof Counts.Type

export const Check = Schema.Struct({
  name: Schema.String,
  /** True when the check held or was skipped. */
  ok: Schema.Boolean,
  /** Not checked: the detail says why. */
  skipped: Schema.Boolean,
  detail: Schema.String
})
export type Check = typeof Check.Type

/** What the server's counters gained during the run (negative where one went down). */
export const StatsAdded = Schema.Struct({ ...UptimeStats.fields, storage_failures: Schema.Number })
export type StatsAdded = typeof StatsAdded.Type

export const ServerStats = Schema.Struct({
  /** Live replicas whose counters were summed, after the run. */
  replicas: Schema.Number,
  added: StatsAdded,
  /** Why the stats checks were skipped (the server restarted during the run); null when they ran. */
  skipped: Schema.NullOr(Schema.String)
})
export type ServerStats = typeof ServerStats.Type

export const Verification = Schema.Struct({
  ok: Schema.Boolean,
  rows_before: Schema.NullOr(Schema.Int),
  rows_after: Schema.NullOr(Schema.Int),
  rows_added: Schema.NullOr(Schema.Int),
  /** Keys this run stored: answered "processed", or recovered. */
  new_keys: Count,
  /** Acknowledged keys that were already stored before the run (a re-run of the same seed). */
  already_stored_keys: Count,
  spot_checked: Count,
  /** The server's `/stats` counters over the run; null when they could not be read. */
  server_stats: Schema.NullOr(ServerStats),
  checks: Schema.Array(Check)
})
export type Verification = typeof Verification.Type

export const Summary = Schema.Struct({
  url: Schema.String,
  mode: Schema.Literal("single", "batch"),
  batch_size: Schema.NullOr(Count),
  concurrency: Count,
  seed: Schema.Number,
  run_id: Schema.String,
  /** When the run started, ISO 8601 UTC. */
  started_at: Schema.String,
  ...Counts.fields,
  elapsed_seconds: Schema.NonNegative,
  /** Events answered (processed or duplicate) per second of sending. */
  events_per_second: Schema.NonNegative,
  requests_per_second: Schema.NonNegative,
  latency_ms: Schema.NullOr(Latency),
  /** Final failures and rejections by reason. */
  failure_reasons: CountsByReason,
  /** Attempts repeated, by what the server or the network answered (e.g. `http 503`, `http 429`, `connection error`). */
  retry_causes: CountsByReason,
  verification: Schema.NullOr(Verification),
  /** CPU time (user and system) the publisher spent while sending: its own cost, to set against the events. */
  send_cpu_seconds: Schema.NonNegative,
  /** Seconds from the start of the process to its first publish request. */
  startup_seconds: Schema.NonNegative,
  /** The CPU time (user and system) of that start-up: what it costs on an idle machine, waits for /ready aside. */
  startup_cpu_seconds: Schema.NonNegative,
  /** Seconds from the last answer to the summary: the verification's reads and the summary itself. */
  wrapup_seconds: Schema.NonNegative,
  wrapup_cpu_seconds: Schema.NonNegative
})
export type Summary = typeof Summary.Type

/** Exit status: 0 only when nothing finally failed or was rejected and, when verified, every check held. */
export const succeeded = (
  s: Pick<Summary, "failed" | "rejected"> & { readonly verification: { readonly ok: boolean } | null }
): boolean =>
  s.failed === 0 && s.rejected === 0 && (s.verification === null || s.verification.ok)
