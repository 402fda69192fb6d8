import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import * as MetricLabel from "effect/MetricLabel"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"

/**
 * The aggregator's metrics, in Effect's (process-wide) metric registry, exposed at `GET /metrics` in the
 * Prometheus text format. Every name starts with `aggregator_`; labels take a handful of values each
 * (result, route as declared, status code, pool state) — never a topic, an event id or anything a client chooses.
 *
 * Labelled series are made from tagged metric keys (`labelled`), not with `Metric.tagged`: a tagged metric
 * builds and hashes a new key on every update, while a metric made from a key finds its registry entry once.
 */

const labelled = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>,
  labels: Record<string, string>
) => Metric.fromMetricKey(MetricKey.taggedWithLabels(key, Object.entries(labels).map(([k, v]) => MetricLabel.make(k, v))))

const events = MetricKey.counter("aggregator_events_total", {
  description: "Events by outcome: processed (stored now), duplicate (already stored), rejected (invalid).",
  incremental: true
})
export const processedEvents = labelled(events, { result: "processed" })
export const duplicateEvents = labelled(events, { result: "duplicate" })
export const rejectedEvents = labelled(events, { result: "rejected" })

const announcements = MetricKey.counter("aggregator_announcements_total", {
  description: "Stored events announced on the broker (ok) or not announced: broker down or buffer full (failed).",
  incremental: true
})
export const announcedOk = labelled(announcements, { result: "ok" })
export const announcedFailed = labelled(announcements, { result: "failed" })

export const storageFailures = Metric.counter("aggregator_storage_failures_total", {
  description: "Events answered 503 because their transaction did not commit.",
  incremental: true
})

export const fastIngestRequests = Metric.counter("aggregator_fast_ingest_requests_total", {
  description: "Single-event publishes answered by the ingest front door, beneath the HTTP framework (FAST_INGEST).",
  incremental: true
})

export const exportedEvents = Metric.counter("aggregator_exported_events_total", {
  description: "Events read from storage for GET /events/export answers (a client that goes away stops the reading).",
  incremental: true
})

export const retentionDeleted = Metric.counter("aggregator_retention_deleted_total", {
  description: "Events deleted because they were older than RETENTION (by this replica).",
  incremental: true
})

const seconds = (start: number, count: number) => MetricBoundaries.exponential({ start, factor: 2, count })

const requestDuration = MetricKey.histogram(
  "aggregator_http_request_duration_seconds",
  seconds(0.0005, 16),
  "Time from a request's arrival to its answer, by route and status (live-tail streams not included)."
)
const requestDurations = new Map<string, Metric.Metric.Histogram<number>>()

/** The latency histogram of one route and status (made once per pair; there are few). */
export const requestDurationOf = (route: string, status: number) => {
  const id = `${route} ${status}`
  let histogram = requestDurations.get(id)
  if (histogram === undefined) {
    histogram = labelled(requestDuration, { route, status: String(status) })
    requestDurations.set(id, histogram)
  }
  return histogram
}

export const batchSize = Metric.histogram(
  "aggregator_batch_size_events",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 11 }),
  "Events written by one gathered transaction (group commit)."
)

export const commitDuration = Metric.histogram(
  "aggregator_commit_duration_seconds",
  seconds(0.0005, 14),
  "Time one gathered transaction took, insert to commit (or failure)."
)

export const pendingEvents = Metric.gauge("aggregator_pending_events", {
  description: "Events accepted for writing whose transaction has not finished (429 past MAX_PENDING_EVENTS)."
})

const pool = MetricKey.gauge("aggregator_db_pool_connections", {
  description: "Database connections by state: in_use, idle, and max (the pool's size; 1 for the embedded database)."
})
export const poolInUse = labelled(pool, { state: "in_use" })
export const poolIdle = labelled(pool, { state: "idle" })
export const poolMax = labelled(pool, { state: "max" })

export const poolWaiting = Metric.gauge("aggregator_db_pool_waiting", {
  description: "Queries waiting for a free database connection."
})

export const streamClients = Metric.gauge("aggregator_stream_clients", {
  description: "Live-tail (/events/stream) clients connected to this replica."
})

export const residentMemory = Metric.gauge("aggregator_process_resident_memory_bytes", {
  description: "Resident set size of this process."
})

export const uptime = Metric.gauge("aggregator_uptime_seconds", {
  description: "Seconds since this process started."
})

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\n/g, "\\n")
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

const number = (n: number | bigint) =>
  typeof n === "bigint"
    ? n.toString()
    : n === Infinity
    ? "+Inf"
    : n === -Infinity
    ? "-Inf"
    : Number.isNaN(n)
    ? "NaN"
    : String(n)

const labels = (pairs: ReadonlyArray<readonly [string, string]>) =>
  pairs.length === 0 ? "" : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`

/**
 * The Prometheus text exposition (version 0.0.4) of the given metrics: one `# HELP` and `# TYPE` per
 * name, histograms as cumulative `_bucket{le=…}` lines with `_sum` and `_count`. Names not starting
 * with `prefix` are left out (other libraries may register their own metrics in the same registry).
 */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>, prefix = "aggregator_"): string => {
  const byName = new Map<string, Array<MetricPair.MetricPair.Untyped>>()
  for (const pair of pairs) {
    const name = pair.metricKey.name
    if (!name.startsWith(prefix)) continue
    const list = byName.get(name)
    if (list === undefined) byName.set(name, [pair])
    else list.push(pair)
  }
  const lines: Array<string> = []
  for (const name of [...byName.keys()].sort()) {
    const group = byName.get(name)!
    const state = group[0].metricState
    const type = MetricState.isCounterState(state)
      ? "counter"
      : MetricState.isGaugeState(state)
      ? "gauge"
      : MetricState.isHistogramState(state)
      ? "histogram"
      : undefined
    if (type === undefined) continue
    const description = group.find((p) => p.metricKey.description._tag === "Some")?.metricKey.description
    if (description?._tag === "Some") lines.push(`# HELP ${name} ${escapeHelp(description.value)}`)
    lines.push(`# TYPE ${name} ${type}`)
    const sorted = group
      .map((p) => ({ tags: p.metricKey.tags.map((t) => [t.key, t.value] as const), state: p.metricState }))
      .sort((a, b) => labels(a.tags).localeCompare(labels(b.tags)))
    for (const { state, tags } of sorted) {
      if (MetricState.isCounterState(state)) lines.push(`${name}${labels(tags)} ${number(state.count)}`)
      else if (MetricState.isGaugeState(state)) lines.push(`${name}${labels(tags)} ${number(state.value)}`)
      else if (MetricState.isHistogramState(state)) {
        let sawInf = false
        for (const [bound, count] of state.buckets) {
          if (bound === Infinity) sawInf = true
          lines.push(`${name}_bucket${labels([...tags, ["le", number(bound)]])} ${count}`)
        }
        if (!sawInf) lines.push(`${name}_bucket${labels([...tags, ["le", "+Inf"]])} ${state.count}`)
        lines.push(`${name}_sum${labels(tags)} ${number(state.sum)}`)
        lines.push(`${name}_count${labels(tags)} ${state.count}`)
      }
    }
  }
  return lines.join("\n") + "\n"
}

/** Puts metrics in the registry at zero, so a scrape shows them before anything moves them. */
export const register = (...metrics: ReadonlyArray<Metric.Metric<any, any, any>>) =>
  Effect.forEach(metrics, Metric.value, { discard: true })

/** The whole registry, rendered. */
export const prometheusText = Effect.map(Metric.snapshot, (pairs) => renderPrometheus(pairs))
