/**
 * The page behind `GET /dashboard`: one self-contained HTML document (inline CSS and script, no external
 * requests) that polls `/stats` every second and `/topics` every 5 s, and follows the live tail
 * `/events/stream`, all same origin.
 * Totals and rates are the cluster figures (every replica behind a load balancer). Event data is only ever
 * written with `textContent`: topics and ids are the publishers' text.
 */
export const dashboardPage = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark">
<title>log-aggregator · dashboard</title>
<link rel="icon" href="data:,">
<style>
:root {
  --bg: #0b0f17; --panel: #121826; --panel-2: #0e131e; --border: #1f2738; --grid: #1c2433;
  --text: #e6e9f0; --muted: #8d97ab; --faint: #5d677c;
  --stored: #3fb68b; --dup: #e3a53c; --rej: #e5534b; --accent: #6ea8fe;
  --mono: ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header {
  display: flex; align-items: center; justify-content: space-between; gap: 16px; flex-wrap: wrap;
  padding: 14px 28px; background: var(--panel-2); border-bottom: 1px solid var(--border);
}
.brand { display: flex; align-items: center; gap: 12px; }
.brand svg { display: block; }
h1 { margin: 0; font-size: 18px; font-weight: 650; letter-spacing: .01em; }
.brand small { color: var(--muted); font-size: 12px; }
.pills { display: flex; gap: 8px; flex-wrap: wrap; }
.pill {
  display: inline-flex; align-items: center; gap: 7px; padding: 4px 11px; font-size: 12px; color: var(--muted);
  background: var(--panel); border: 1px solid var(--border); border-radius: 999px; white-space: nowrap;
}
.pill b { color: var(--text); font-weight: 550; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: var(--faint); }
.pill[data-state="ok"] .dot { background: var(--stored); box-shadow: 0 0 0 3px rgba(63, 182, 139, .18); }
.pill[data-state="warn"] .dot { background: var(--dup); box-shadow: 0 0 0 3px rgba(227, 165, 60, .18); }
.pill[data-state="error"] .dot { background: var(--rej); box-shadow: 0 0 0 3px rgba(229, 83, 75, .2); }
.pill[data-state="error"] b { color: #ff8a83; }
.pill[data-state="error"] .prefix { display: none; }
main { max-width: 1440px; margin: 0 auto; padding: 18px 28px 28px; display: grid; gap: 14px; }
.grid { display: grid; gap: 14px; }
.kpis { grid-template-columns: repeat(4, minmax(0, 1fr)); }
.totals { grid-template-columns: repeat(6, minmax(0, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--border); border-radius: 10px; padding: 14px 16px; min-width: 0; }
.label { color: var(--muted); font-size: 11.5px; font-weight: 600; letter-spacing: .07em; text-transform: uppercase; }
.value {
  margin-top: 4px; font-size: 30px; font-weight: 650; line-height: 1.15; font-variant-numeric: tabular-nums;
  white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
}
.value .unit { font-size: 14px; font-weight: 500; color: var(--muted); margin-left: 4px; }
.totals .card { padding: 11px 14px; }
.totals .value { font-size: 21px; }
.sub { margin-top: 2px; color: var(--faint); font-size: 12px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card.accent-stored { box-shadow: inset 3px 0 0 var(--stored); }
.card.accent-dup { box-shadow: inset 3px 0 0 var(--dup); }
.card.accent-rate { box-shadow: inset 3px 0 0 var(--accent); }
.card.accent-rej { box-shadow: inset 3px 0 0 var(--rej); }
.card[data-alert="true"] { border-color: rgba(229, 83, 75, .55); }
.card[data-alert="true"] .value { color: #ff8a83; }
.stale .card .value { opacity: .45; }
.panel { background: var(--panel); border: 1px solid var(--border); border-radius: 10px; padding: 14px 16px; min-width: 0; }
.panel-head { display: flex; align-items: baseline; justify-content: space-between; gap: 12px; margin-bottom: 8px; }
.panel-head h2 { margin: 0; font-size: 14px; font-weight: 600; }
.panel-head .meta { color: var(--faint); font-size: 12px; }
.legend { display: flex; gap: 14px; color: var(--muted); font-size: 12px; }
.legend span::before {
  content: ""; display: inline-block; width: 9px; height: 9px; border-radius: 2px; margin-right: 6px; vertical-align: -1px;
}
.legend .l-stored::before { background: var(--stored); }
.legend .l-dup::before { background: var(--dup); }
.legend .l-rej::before { background: var(--rej); }
#chart { display: block; width: 100%; height: 150px; }
#chart text { fill: var(--faint); font-size: 11px; font-family: var(--mono); }
table { width: 100%; border-collapse: collapse; table-layout: fixed; font-size: 13px; }
th {
  text-align: left; color: var(--muted); font-size: 11.5px; font-weight: 600; letter-spacing: .06em; text-transform: uppercase;
  padding: 6px 10px; border-bottom: 1px solid var(--border);
}
td { padding: 5px 10px; border-bottom: 1px solid var(--grid); white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
tbody tr:last-child td { border-bottom: 0; }
td.mono, th.mono { font-family: var(--mono); font-size: 12px; }
td[data-field="topic"] { color: var(--accent); }
td[data-field="events"] { text-align: right; }
td[data-field="received_at"], td[data-field="timestamp"], td[data-field="payload"] { color: var(--muted); }
td[data-field="payload"] { color: var(--faint); }
td[data-field="seq"] { color: var(--faint); text-align: right; }
tr.fresh td { animation: fresh 1.6s ease-out; }
@keyframes fresh { from { background: rgba(110, 168, 254, .16); } to { background: transparent; } }
.empty { padding: 22px 10px; color: var(--faint); text-align: center; }
.empty[hidden] { display: none; }
@media (max-width: 1000px) {
  .kpis { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .totals { grid-template-columns: repeat(3, minmax(0, 1fr)); }
}
</style>
</head>
<body>
<header>
  <div class="brand">
    <svg width="26" height="26" viewBox="0 0 26 26" aria-hidden="true">
      <rect x="1" y="1" width="24" height="24" rx="6" fill="#16223a" stroke="#2b3b5c"/>
      <rect x="6" y="14" width="3" height="6" rx="1" fill="#3fb68b"/>
      <rect x="11.5" y="9" width="3" height="11" rx="1" fill="#6ea8fe"/>
      <rect x="17" y="5.5" width="3" height="14.5" rx="1" fill="#3fb68b"/>
    </svg>
    <div><h1>log-aggregator</h1><small>idempotent event ingestion · live dashboard</small></div>
  </div>
  <div class="pills">
    <span class="pill" id="stats-pill" data-state="warn"><span class="dot"></span><span class="prefix">stats</span> <b data-testid="stats-state">loading</b></span>
    <span class="pill" id="tail-pill" data-state="warn"><span class="dot"></span>live tail <b data-testid="tail-state">connecting</b></span>
    <span class="pill">up <b data-testid="uptime">—</b></span>
  </div>
</header>
<main id="main">
  <section class="grid kpis">
    <div class="card accent-rate">
      <div class="label">Events / s</div>
      <div class="value"><span data-testid="events-per-second">—</span></div>
      <div class="sub" id="peak">received per second, all replicas</div>
    </div>
    <div class="card accent-dup">
      <div class="label">Duplicate rate</div>
      <div class="value"><span data-testid="duplicate-rate">—</span></div>
      <div class="sub" id="rate-sub">of accepted events</div>
    </div>
    <div class="card">
      <div class="label">Received</div>
      <div class="value"><span data-testid="received">—</span></div>
      <div class="sub">since start, all replicas</div>
    </div>
    <div class="card accent-stored">
      <div class="label">Stored</div>
      <div class="value"><span data-testid="stored">—</span></div>
      <div class="sub">unique events processed</div>
    </div>
  </section>
  <section class="grid totals">
    <div class="card">
      <div class="label">Duplicates</div>
      <div class="value"><span data-testid="duplicates">—</span></div>
      <div class="sub">dropped, already stored</div>
    </div>
    <div class="card" id="rejected-card">
      <div class="label">Rejected</div>
      <div class="value"><span data-testid="rejected">—</span></div>
      <div class="sub">failed validation</div>
    </div>
    <div class="card">
      <div class="label">Rows in database</div>
      <div class="value"><span data-testid="db-rows">—</span></div>
      <div class="sub">events table</div>
    </div>
    <div class="card" id="storage-card">
      <div class="label">Storage failures</div>
      <div class="value"><span data-testid="storage-failures">—</span></div>
      <div class="sub">events not committed</div>
    </div>
    <div class="card" id="announce-card">
      <div class="label">Announce failures</div>
      <div class="value"><span data-testid="announcements-failed">—</span></div>
      <div class="sub" id="announce-sub">stored, not streamed</div>
    </div>
    <div class="card">
      <div class="label">Replicas</div>
      <div class="value"><span data-testid="replicas">—</span></div>
      <div class="sub" id="clients-sub">live tail clients here: —</div>
    </div>
  </section>
  <section class="panel">
    <div class="panel-head">
      <h2>Events per second <span class="meta">· last 60 s, each a 5 s average</span></h2>
      <div class="legend"><span class="l-stored">stored</span><span class="l-dup">duplicate</span><span class="l-rej">rejected</span></div>
    </div>
    <svg id="chart" data-testid="chart" role="img" aria-label="events per second over the last 60 seconds"></svg>
  </section>
  <section class="panel">
    <div class="panel-head">
      <h2>Newest events <span class="meta">· live tail, newest first</span></h2>
      <span class="meta" id="tail-count">0 events seen</span>
    </div>
    <table>
      <colgroup>
        <col style="width: 5%"><col style="width: 10%"><col style="width: 15%"><col style="width: 19%">
        <col style="width: 11%"><col style="width: 19%"><col style="width: 21%">
      </colgroup>
      <thead><tr>
        <th class="mono" style="text-align: right">seq</th><th>Received</th><th>Topic</th><th>Event ID</th>
        <th>Source</th><th>Timestamp</th><th>Payload</th>
      </tr></thead>
      <tbody data-testid="newest" id="newest"></tbody>
    </table>
    <div class="empty" id="empty">Waiting for events…</div>
  </section>
  <section class="panel">
    <div class="panel-head">
      <h2>Topics <span class="meta">· stored events per topic, from /topics every 5 s</span></h2>
      <span class="meta" id="topics-count">—</span>
    </div>
    <table>
      <thead><tr>
        <th>Topic</th><th class="mono" style="text-align: right">Events</th><th>First received</th><th>Last received</th>
      </tr></thead>
      <tbody data-testid="topics" id="topics"></tbody>
    </table>
    <div class="empty" id="topics-empty">No topics yet</div>
  </section>
</main>
<script>
"use strict";
(() => {
  const POLL_MS = 1000;
  const WINDOW_MS = 60000;
  // Rates are averaged over this long. Behind a load balancer each poll may reach another replica, and each
  // replica sees the others' counters as of their last report (CLUSTER_STATS_INTERVAL_MS, 2 s by default):
  // one-second differences would swing between 0 and twice the true rate.
  const RATE_WINDOW_MS = 5000;
  const NEWEST = 20;
  const SVG = "http://www.w3.org/2000/svg";

  const byId = (id) => document.getElementById(id);
  const field = (name) => document.querySelector('[data-testid="' + name + '"]');
  const integer = (n) => Math.round(n).toLocaleString("en-US");
  const perSecond = (v) => v <= 0 ? "0" : v < 10 ? v.toFixed(1) : integer(v);
  const compact = (v) => v >= 1e6 ? +(v / 1e6).toFixed(1) + "M" : v >= 1e3 ? +(v / 1e3).toFixed(1) + "k" : String(+v.toFixed(1));
  const set = (name, text) => { const el = field(name); if (el.textContent !== text) el.textContent = text; };
  const pill = (id, state, text, testid) => { byId(id).dataset.state = state; set(testid, text); };
  const duration = (s) => {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    if (d > 0) return d + "d " + h + "h";
    if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
    return m + "m " + String(s % 60).padStart(2, "0") + "s";
  };

  // ---- /stats: figures and rates ----
  let history = []; // {t, u}: the cluster counters at each poll, the last RATE_WINDOW_MS of them
  let samples = [];

  const render = (stats) => {
    const c = stats.cluster;
    const u = c.uptime_stats;
    const now = performance.now();
    byId("main").classList.remove("stale");
    pill("stats-pill", "ok", "live", "stats-state");
    set("received", integer(u.received));
    set("stored", integer(u.unique_processed));
    set("duplicates", integer(u.duplicate_dropped));
    set("rejected", integer(u.rejected));
    set("db-rows", stats.database_total_rows === null ? "—" : integer(stats.database_total_rows));
    set("storage-failures", integer(c.storage_failures));
    set("announcements-failed", integer(c.announcements.failed));
    set("replicas", integer(c.replicas));
    set("uptime", duration(stats.uptime_seconds));
    byId("storage-card").dataset.alert = String(c.storage_failures > 0);
    byId("announce-card").dataset.alert = String(c.announcements.failed > 0);
    byId("announce-sub").textContent = "of " + integer(c.announcements.published + c.announcements.failed) + " stored";
    byId("clients-sub").textContent = "live tail clients here: " + integer(stats.stream_clients);
    const accepted = u.unique_processed + u.duplicate_dropped;
    set("duplicate-rate", accepted === 0 ? "—" : (u.duplicate_dropped / accepted * 100).toFixed(1) + "%");
    byId("rate-sub").textContent = accepted === 0
      ? "nothing accepted yet"
      : integer(u.duplicate_dropped) + " of " + integer(accepted) + " accepted";

    const previous = history.length > 0 ? history[0] : null;
    history.push({ t: now, u });
    history = history.filter((h) => now - h.t <= RATE_WINDOW_MS);
    if (previous !== null) {
      const dt = (now - previous.t) / 1000;
      // counters only grow; a drop means a replica left or restarted, so that window counts as nothing
      const delta = (k) => Math.max(0, u[k] - previous.u[k]) / dt;
      if (dt > 0) {
        const sample = { t: now, stored: delta("unique_processed"), dup: delta("duplicate_dropped"), rej: delta("rejected") };
        sample.total = Math.max(delta("received"), sample.stored + sample.dup + sample.rej);
        samples.push(sample);
        set("events-per-second", perSecond(sample.total));
      }
    } else {
      set("events-per-second", "0");
    }
    samples = samples.filter((s) => now - s.t <= WINDOW_MS);
    const peak = samples.reduce((m, s) => Math.max(m, s.total), 0);
    byId("peak").textContent = peak > 0 ? "peak " + perSecond(peak) + " in the last minute" : "received per second (5 s average), all replicas";
    drawChart(now);
  };

  const unavailable = (reason) => {
    byId("main").classList.add("stale");
    pill("stats-pill", "error", "stats unavailable", "stats-state");
    byId("stats-pill").title = String(reason);
    set("events-per-second", "—");
  };

  // where the aggregator's routes are, from this page's own path, so the page also works behind a proxy that
  // serves the aggregator under a path prefix (and at /dashboard/)
  const root = location.pathname.replace(/dashboard\\/?$/, "");

  const poll = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      const res = await fetch(root + "stats", { cache: "no-store", headers: { accept: "application/json" }, signal: abort.signal });
      if (!res.ok) throw new Error("HTTP " + res.status);
      render(await res.json());
    } catch (e) {
      unavailable(e && e.message ? e.message : e);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  };

  // ---- the chart: stacked bars of stored, duplicate and rejected events per second ----
  const chart = byId("chart");
  const node = (name, attrs, text) => {
    const el = document.createElementNS(SVG, name);
    for (const k in attrs) el.setAttribute(k, String(attrs[k]));
    if (text !== undefined) el.textContent = text;
    return el;
  };
  // a round step (1, 2 or 5 × 10^n) and at most five gridlines
  const scale = (peak) => {
    if (peak <= 0) return { max: 4, step: 1 };
    const raw = peak / 4, p = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw);
    return { max: step * Math.ceil(peak / step), step };
  };
  const drawChart = (now) => {
    const w = chart.clientWidth || 600, h = chart.clientHeight || 150;
    const left = 44, right = 8, top = 8, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    const { max, step } = scale(samples.reduce((m, s) => Math.max(m, s.total), 0));
    const y = (v) => top + ph - v / max * ph;
    const parts = [];
    for (let i = 0; i * step <= max; i++) {
      const v = i * step, yy = Math.round(y(v)) + 0.5;
      parts.push(node("line", { x1: left, x2: w - right, y1: yy, y2: yy, stroke: i === 0 ? "#2a3447" : "#1c2433" }));
      parts.push(node("text", { x: left - 8, y: yy + 4, "text-anchor": "end" }, compact(v)));
    }
    for (const [age, label] of [[60, "-60s"], [45, "-45s"], [30, "-30s"], [15, "-15s"], [0, "now"]]) {
      const x = left + pw - age * 1000 / WINDOW_MS * pw;
      parts.push(node("text", { x, y: h - 4, "text-anchor": age === 60 ? "start" : age === 0 ? "end" : "middle" }, label));
    }
    const slot = pw / (WINDOW_MS / POLL_MS);
    const bw = Math.max(2, slot - 3);
    for (const s of samples) {
      const x = left + pw - (now - s.t) / WINDOW_MS * pw - bw;
      if (x < left) continue;
      let base = 0;
      for (const [v, color] of [[s.stored, "#3fb68b"], [s.dup, "#e3a53c"], [s.rej, "#e5534b"]]) {
        if (v <= 0) continue;
        const y0 = y(base), y1 = y(base + v);
        parts.push(node("rect", { x: x.toFixed(1), y: y1.toFixed(1), width: bw.toFixed(1), height: Math.max(1, y0 - y1).toFixed(1), rx: 1.5, fill: color }));
        base += v;
      }
    }
    chart.replaceChildren(...parts);
  };
  window.addEventListener("resize", () => drawChart(performance.now()));

  // ---- the live tail: newest events first ----
  const newest = byId("newest");
  let pending = [];
  let flushing = false;
  let seen = 0;

  const cell = (name, text, mono) => {
    const td = document.createElement("td");
    td.dataset.field = name;
    if (mono) td.className = "mono";
    td.textContent = text;
    td.title = text;
    return td;
  };
  const clock = (iso) => {
    const d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
  };
  const oneLine = (payload) => {
    if (payload === null || payload === undefined) return "";
    let text;
    try { text = JSON.stringify(payload); } catch (e) { text = String(payload); }
    return text.length > 80 ? text.slice(0, 79) + "…" : text;
  };
  const row = (e) => {
    const tr = document.createElement("tr");
    tr.dataset.testid = "event";
    tr.className = "fresh";
    tr.append(
      cell("seq", String(e.seq), true),
      cell("received_at", clock(e.received_at), true),
      cell("topic", String(e.topic), false),
      cell("event_id", String(e.event_id), true),
      cell("source", e.source === null || e.source === undefined ? "—" : String(e.source), false),
      cell("timestamp", String(e.timestamp), true),
      cell("payload", oneLine(e.payload), true)
    );
    return tr;
  };
  const flush = () => {
    flushing = false;
    const batch = pending;
    pending = [];
    for (const e of batch) newest.insertBefore(row(e), newest.firstChild);
    while (newest.children.length > NEWEST) newest.lastElementChild.remove();
    byId("empty").hidden = newest.children.length > 0;
    byId("tail-count").textContent = integer(seen) + (seen === 1 ? " event seen" : " events seen");
  };
  const arrived = (e) => {
    seen++;
    pending.push(e);
    if (pending.length > NEWEST) pending.splice(0, pending.length - NEWEST);
    if (!flushing) {
      flushing = true;
      setTimeout(flush, 30);
    }
  };

  let source = null;
  const tail = () => {
    pill("tail-pill", "warn", source === null ? "connecting" : "reconnecting", "tail-state");
    source = new EventSource(root + "events/stream");
    source.onopen = () => pill("tail-pill", "ok", "connected", "tail-state");
    source.onmessage = (m) => {
      let e;
      try { e = JSON.parse(m.data); } catch (err) { return; }
      if (e !== null && typeof e === "object") arrived(e);
    };
    source.onerror = () => {
      pill("tail-pill", "warn", "reconnecting", "tail-state");
      // EventSource retries by itself unless the answer was not a stream (e.g. 503 while starting)
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        setTimeout(tail, 3000);
      }
    };
  };

  // ---- topics: the biggest first, at most TOPICS rows ----
  const TOPICS = 50;
  const topicsBody = byId("topics");
  const pollTopics = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 5000);
    try {
      const res = await fetch(root + "topics", { cache: "no-store", headers: { accept: "application/json" }, signal: abort.signal });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const topics = await res.json();
      if (!Array.isArray(topics)) throw new Error("not a list");
      const shown = topics.slice().sort((a, b) => b.events - a.events).slice(0, TOPICS);
      topicsBody.replaceChildren(...shown.map((t) => {
        const tr = document.createElement("tr");
        tr.dataset.testid = "topic";
        tr.append(
          cell("topic", String(t.topic), false),
          cell("events", integer(Number(t.events)), true),
          cell("first_received_at", String(t.first_received_at), true),
          cell("last_received_at", String(t.last_received_at), true)
        );
        return tr;
      }));
      byId("topics-empty").hidden = topics.length > 0;
      byId("topics-count").textContent = integer(topics.length) + (topics.length === 1 ? " topic" : " topics") +
        (topics.length > TOPICS ? " · the " + TOPICS + " biggest shown" : "");
    } catch (e) {
      byId("topics-count").textContent = "topics unavailable";
    } finally {
      clearTimeout(timer);
      setTimeout(pollTopics, 5000);
    }
  };

  drawChart(performance.now());
  poll();
  pollTopics();
  tail();
})();
</script>
</body>
</html>
`
