import { bucketIndex, LATENCY_BUCKETS_MS } from "./Latency.js"
import { type Bucket, type Latency, succeeded, type Summary } from "./Summary.js"

// The summary as the text printed after a run and as the one-page HTML report.

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

const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" })[c]!)

const num = (x: number, fractionDigits = 0) => x.toLocaleString("en-US", { maximumFractionDigits: fractionDigits })

/** A figure the tests and a reader can find: the value as the summary has it, with thousands separators. */
const figure = (name: string, x: number, fractionDigits = 0) =>
  `<span data-figure="${name}">${num(x, fractionDigits)}</span>`

const dateOf = (iso: string): string => {
  const ms = Date.parse(iso)
  return Number.isNaN(ms) ? iso : `${new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "")} UTC`
}

const verdict = (ok: boolean | null) =>
  ok === null ? `<span class="badge skip">SKIPPED</span>` : `<span class="badge ${ok ? "pass" : "fail"}">${ok ? "PASS" : "FAIL"}</span>`

const card = (label: string, value: string, sub = "") =>
  `<div class="card"><div class="label">${label}</div><div class="value">${value}</div>` +
  (sub === "" ? "" : `<div class="sub">${sub}</div>`) + `</div>`

const tallyTable = (caption: string, tally: Readonly<Record<string, number>>, empty: string) => {
  const rows = Object.entries(tally).sort(([, a], [, b]) => b - a)
  if (rows.length === 0) return `<p class="muted">${empty}</p>`
  return `<table class="tally"><thead><tr><th>${caption}</th><th class="num">count</th></tr></thead><tbody>` +
    rows.map(([key, count]) => `<tr><td>${escapeHtml(key)}</td><td class="num">${num(count)}</td></tr>`).join("") +
    `</tbody></table>`
}

const boundLabel = (ms: number) => (ms >= 1000 ? `${num(ms / 1000, 1)} s` : `${num(ms, 1)}`)

const bucketLabel = (histogram: ReadonlyArray<Bucket>, i: number): string => {
  const le = histogram[i].le_ms
  if (le !== "+Inf") return `≤ ${boundLabel(le)}`
  const previous = i > 0 ? histogram[i - 1].le_ms : "+Inf"
  return previous === "+Inf" ? "any" : `> ${boundLabel(previous)}`
}

/** A step of 1, 2 or 5 × 10^k giving about four gridlines up to `max`. */
const gridStep = (max: number) => {
  const rough = Math.max(1, max / 4)
  const power = 10 ** Math.floor(Math.log10(rough))
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= rough)!
  return Math.max(1, step)
}

const histogramSvg = (latency: Latency, histogram: ReadonlyArray<Bucket>): string => {
  const width = 960, height = 320
  const left = 56, right = 12, top = 28, bottom = 64
  const plotW = width - left - right, plotH = height - top - bottom
  const maxCount = Math.max(0, ...histogram.map((b) => b.count))
  const step = gridStep(maxCount)
  const scaleMax = Math.max(step, Math.ceil(maxCount / step) * step)
  const y = (count: number) => top + plotH - (count / scaleMax) * plotH
  const slot = plotW / histogram.length
  const barW = slot * 0.72

  const bounds = histogram.flatMap((b) => (b.le_ms === "+Inf" ? [] : [b.le_ms]))
  const marks = new Map<number, Array<string>>()
  for (const [name, value] of [["p50", latency.p50], ["p95", latency.p95], ["p99", latency.p99]] as const) {
    const i = Math.min(bucketIndex(value, bounds), histogram.length - 1)
    marks.set(i, [...(marks.get(i) ?? []), name])
  }

  const parts: Array<string> = []
  for (let tick = 0; tick <= scaleMax; tick += step) {
    parts.push(
      `<line class="grid" x1="${left}" x2="${width - right}" y1="${y(tick).toFixed(1)}" y2="${y(tick).toFixed(1)}"/>`,
      `<text class="axis" x="${left - 8}" y="${(y(tick) + 4).toFixed(1)}" text-anchor="end">${num(tick)}</text>`
    )
  }
  histogram.forEach((b, i) => {
    const x = left + i * slot + (slot - barW) / 2
    const cx = (left + i * slot + slot / 2).toFixed(1)
    const h = b.count === 0 ? 0 : Math.max(1.5, (b.count / scaleMax) * plotH)
    const label = bucketLabel(histogram, i)
    const marked = marks.get(i)
    parts.push(
      `<rect class="bar${marked ? " marked" : ""}" data-le-ms="${b.le_ms}" data-count="${b.count}" ` +
        `x="${x.toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${barW.toFixed(1)}" height="${h.toFixed(1)}" rx="2">` +
        `<title>${escapeHtml(label)} ms: ${num(b.count)} requests</title></rect>`,
      `<text class="count${b.count === 0 ? " zero" : ""}" x="${cx}" y="${(top + plotH - h - 6).toFixed(1)}" ` +
        `text-anchor="middle">${num(b.count)}</text>`,
      `<text class="axis" x="${cx}" y="${top + plotH + 18}" text-anchor="middle">${escapeHtml(label)}</text>`
    )
    if (marked) {
      parts.push(`<text class="mark" x="${cx}" y="${top + plotH + 36}" text-anchor="middle">${marked.join(" · ")}</text>`)
    }
  })
  parts.push(
    `<line class="baseline" x1="${left}" x2="${width - right}" y1="${top + plotH}" y2="${top + plotH}"/>`,
    `<text class="axis" x="${left + plotW / 2}" y="${height - 6}" text-anchor="middle">` +
      `latency per request, ms (each bucket: above the previous bound, at most its own)</text>`
  )
  return `<svg class="histogram" viewBox="0 0 ${width} ${height}" role="img" ` +
    `aria-label="Latency histogram: requests per latency bucket">${parts.join("")}</svg>`
}

const latencySection = (s: Summary): string => {
  const l = s.latency_ms
  if (l === null) return `<p class="muted">No request was answered, so there is no latency to show.</p>`
  const samples = `; ${figure("latency_samples", l.samples)} answered requests`
  const stats = [["p50", l.p50], ["p95", l.p95], ["p99", l.p99], ["max", l.max]] as const
  const row = `<div class="percentiles">` +
    stats.map(([name, value]) =>
      `<div class="pct"><div class="label">${name}</div><div class="value">${figure(name, value, 2)}<small> ms</small></div></div>`
    ).join("") + `</div>`
  return `<p class="muted">Per request, from its first attempt to its answer, retries included${samples}.</p>${row}${histogramSvg(l, l.histogram)}`
}

const verificationSection = (s: Summary): string => {
  const v = s.verification
  if (v === null) return `<p class="muted">Skipped (--no-verify).</p>`
  const rows = v.rows_before === null || v.rows_after === null
    ? "the server did not report its row count"
    : `database rows ${num(v.rows_before)} → ${num(v.rows_after)}`
  const server = v.server_stats
  const stats = server === null
    ? " · the server's /stats could not be read"
    : server.skipped !== null
    ? ` · server stats not compared: ${escapeHtml(server.skipped)}`
    : ` · server stats (${num(server.replicas)} replica${server.replicas === 1 ? "" : "s"}): ` +
      `+${figure("stats_processed", server.added.unique_processed)} processed, ` +
      `+${figure("stats_duplicates", server.added.duplicate_dropped)} duplicates, ` +
      `+${figure("stats_rejected", server.added.rejected)} rejected, ` +
      `+${figure("stats_received", server.added.received)} received`
  return `<p>${figure("new_keys", v.new_keys)} new keys, ${figure("already_stored_keys", v.already_stored_keys)} ` +
    `already stored before this run · ${rows}${stats} · ${num(v.spot_checked)} keys read back. ` +
    `<span class="muted">Exact when this publisher is the only writer.</span></p>` +
    `<table class="checks"><thead><tr><th></th><th>check</th><th>detail</th></tr></thead><tbody>` +
    v.checks.map((c) => {
      return `<tr class="${c.skipped ? "skipped" : c.ok ? "ok" : "failed"}"><td>${verdict(c.skipped ? null : c.ok)}</td>` +
        `<td>${escapeHtml(c.name)}</td><td>${escapeHtml(c.detail)}</td></tr>`
    }).join("") +
    `</tbody></table>`
}

const style = `
:root { color-scheme: light dark; --bg:#f6f7f9; --panel:#fff; --ink:#1d2330; --muted:#667085; --line:#e3e6eb;
  --bar:#4f7cff; --bar-marked:#2a4fd0; --pass:#12805c; --pass-bg:#dff5ea; --fail:#b42318; --fail-bg:#fde4e1; --skip:#667085; --skip-bg:#eceef2 }
@media (prefers-color-scheme: dark) { :root { --bg:#111418; --panel:#1a1f26; --ink:#e6e9ee; --muted:#98a2b3; --line:#2b323c;
  --bar:#6e93ff; --bar-marked:#a9bfff; --pass:#4ade9b; --pass-bg:#12362a; --fail:#ff8a7a; --fail-bg:#4a1d18; --skip-bg:#2b323c } }
* { box-sizing: border-box }
body { margin:0; background:var(--bg); color:var(--ink); font:15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif }
main { max-width:1040px; margin:0 auto; padding:28px 24px 48px }
header { display:flex; gap:18px; align-items:flex-start; margin-bottom:20px }
h1 { font-size:22px; margin:0 0 4px; overflow-wrap:anywhere }
h1 code { font-size:.9em; font-weight:600 }
h2 { font-size:16px; margin:0 0 12px; display:flex; gap:10px; align-items:center }
.meta, .muted { color:var(--muted) }
.meta { margin:0 }
code { font:13px ui-monospace, SFMono-Regular, Menlo, monospace }
section { background:var(--panel); border:1px solid var(--line); border-radius:10px; padding:18px 20px; margin-top:16px }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(170px, 1fr)); gap:12px; background:none; border:0; padding:0 }
.card { background:var(--panel); border:1px solid var(--line); border-radius:10px; padding:12px 14px }
.label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em }
.value { font-size:24px; font-weight:650; font-variant-numeric:tabular-nums }
.sub { color:var(--muted); font-size:13px; margin-top:2px }
.badge { display:inline-block; white-space:nowrap; font-weight:700; font-size:12px; letter-spacing:.06em; padding:3px 8px; border-radius:6px }
.badge.pass { color:var(--pass); background:var(--pass-bg) } .badge.fail { color:var(--fail); background:var(--fail-bg) }
.badge.skip { color:var(--skip); background:var(--skip-bg) }
header .badge { font-size:20px; padding:8px 14px; border-radius:8px; margin-top:2px }
table { border-collapse:collapse; width:100% }
th, td { text-align:left; padding:7px 10px; border-top:1px solid var(--line); vertical-align:top }
th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.04em; border-top:0 }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums }
td { word-break:break-word }
.checks td:first-child { width:1%; white-space:nowrap } tr.failed td { background:var(--fail-bg) }
tr.skipped td { color:var(--muted) }
.columns { display:grid; grid-template-columns:1fr 1fr; gap:16px; margin-top:16px }
.columns section { margin-top:0 }
.percentiles { display:flex; gap:28px; margin:10px 0 6px }
.value small { font-size:14px; font-weight:500; color:var(--muted) }
svg.histogram { width:100%; height:auto; display:block; margin-top:8px }
svg .bar { fill:var(--bar) } svg .bar.marked { fill:var(--bar-marked) }
svg .grid { stroke:var(--line); stroke-width:1 } svg .baseline { stroke:var(--muted); stroke-width:1 }
svg text { fill:var(--muted); font-size:12px; font-family:system-ui, sans-serif }
svg .count { fill:var(--ink); font-weight:600 } svg .count.zero { fill:var(--muted); font-weight:400 }
svg .mark { fill:var(--bar-marked); font-weight:700 }
footer { color:var(--muted); font-size:12px; margin-top:20px }
@media (max-width:700px) { .columns { grid-template-columns:1fr } }
`

/** The one-page report: self-contained HTML (inline CSS and SVG, no scripts, nothing fetched). */
export const renderReport = (s: Summary): string => {
  const ok = succeeded(s)
  const url = escapeHtml(s.url)
  const date = escapeHtml(dateOf(s.started_at))
  const mode = s.mode === "batch" && s.batch_size !== null ? `batch mode (batches of ${num(s.batch_size)})` : `${s.mode} mode`
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Publisher report: ${url}, ${date}</title>
<style>${style}</style>
</head>
<body>
<main>
<header>
${verdict(ok)}
<div>
<h1>Publisher run against <code>${url}</code></h1>
<p class="meta">${date} · ${escapeHtml(mode)} · concurrency ${num(s.concurrency)} · seed ${escapeHtml(String(s.seed))} · ` +
    `event ids <code>${escapeHtml(s.run_id)}-*</code></p>
</div>
</header>
<section class="cards">
${card("events sent", figure("events", s.events), `${figure("distinct_keys", s.distinct_keys)} distinct · ${figure("duplicate_sends", s.duplicate_sends)} duplicate sends`)}
${card("processed", figure("processed", s.processed), "answered processed (stored)")}
${card("duplicates", figure("duplicates", s.duplicates), "answered dropped_duplicate")}
${card("rejected · failed", `${figure("rejected", s.rejected)} · ${figure("failed", s.failed)}`, "rejected by the server · gave up")}
${card("requests", figure("requests", s.requests), `${figure("retries", s.retries)} retries`)}
${card("elapsed", `${figure("elapsed_seconds", s.elapsed_seconds, 3)}<small> s</small>`, "sending, verification excluded")}
${card("events/s", figure("events_per_second", s.events_per_second, 1), `${figure("requests_per_second", s.requests_per_second, 1)} requests/s`)}
</section>
<section>
<h2>Verification ${verdict(s.verification === null ? null : s.verification.ok)}</h2>
${verificationSection(s)}
</section>
<section>
<h2>Latency</h2>
${latencySection(s)}
</section>
<div class="columns">
<section>
<h2>Retries by cause</h2>
${tallyTable("cause", s.retry_causes, "No request had to be retried.")}
</section>
<section>
<h2>Failures and rejections</h2>
${tallyTable("reason", s.failure_reasons, "None: every event was answered processed or duplicate.")}
</section>
</div>
<footer>log-aggregator publisher · result ${ok ? "OK" : "FAILED"} · ${num(LATENCY_BUCKETS_MS.length + 1)} latency buckets ` +
    `(fixed bounds, counts per bucket)</footer>
</main>
</body>
</html>
`
}
