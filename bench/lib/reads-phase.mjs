// The read side at scale: GET /topics and filtered GET /events pages on the seeded table (10M rows over
// 1,000 topics), and GET /events/export of one 1M-row topic with the aggregator's RSS sampled.
import { measureCpu, rssKb, sampleRss } from "./aggregator.mjs"
import { fmt, getLoad } from "./workloads.mjs"

export const SEED_TOPICS = 1000
export const SEED_SOURCES = 10
// one event a second from here, in seeding order, so time windows and storage order go together as in life
export const SEED_EPOCH = Date.parse("2025-01-01T00:00:00Z")

/**
 * Rows the way the aggregator writes them, generated server-side for g in [$2, $3], with ids prefixed $1:
 * `topicSql` picks the topic; sources rotate within a topic. The topic's totals are added in the same
 * statement, as the aggregator's insert adds them. Answers the rows inserted in a column `n`.
 */
export const seedInsert = (topicSql) => `
  WITH ins AS (
    INSERT INTO events (topic, event_id, "timestamp", source, payload)
    SELECT ${topicSql}, $1 || '-' || lpad(g::text, 10, '0'),
           timestamptz '2025-01-01T00:00:00Z' + g * interval '1 second',
           'src-' || ((g / ${SEED_TOPICS}) % ${SEED_SOURCES}),
           ('{"n":' || g || ',"user":"u' || (g % 1000) || '","amount":42.5,"tags":["a","b"]}')::jsonb
    FROM generate_series($2::int8, $3::int8) AS g
    ON CONFLICT (topic, event_id) DO NOTHING
    RETURNING topic, received_at
  ), per_topic AS (
    INSERT INTO topic_totals AS t (topic, shard, total, first_received_at, last_received_at)
    SELECT topic, 0, count(*), min(received_at), max(received_at) FROM ins GROUP BY topic ORDER BY topic
    ON CONFLICT (topic, shard) DO UPDATE SET total = t.total + excluded.total,
      first_received_at = least(t.first_received_at, excluded.first_received_at),
      last_received_at = greatest(t.last_received_at, excluded.last_received_at)
  )
  SELECT count(*)::int8 AS n FROM ins`

/**
 * One connection for `duration` s, with the CPU each request cost the aggregator and PostgreSQL (ms): on a
 * machine busy with other work the latency is mostly waiting for a core, the CPU a request takes is not.
 */
const measured = async (agg, path, duration) => {
  const { result, cpu, wall } = await measureCpu(agg.pid, () => getLoad({ url: agg.url, path, connections: 1, duration, check: true }))
  const perRequest = (share) => (share * wall * 1000) / Math.max(1, result.ok)
  return { ...result, cpu, aggMs: perRequest(cpu.aggregator), pgMs: perRequest(cpu.postgres) }
}

const iso = (secondsAfterEpoch) => new Date(SEED_EPOCH + secondsAfterEpoch * 1000).toISOString()

/** The filtered pages measured, on a table seeded with `rows` rows by `seedInsert("'seed-' || (g % 1000)")`. */
export const filteredPages = (rows) => {
  const mid = Math.floor(rows / 2)
  const window = Math.floor(rows / 10)
  return [
    { label: "topic + since/until (a 10% window mid-history)", path: `/events?topic=seed-7&since=${iso(mid - window / 2)}&until=${iso(mid + window / 2)}` },
    { label: "topic + source", path: "/events?topic=seed-7&source=src-3" },
    {
      label: "topic + source + since/until + before (a cursor mid-window)",
      path: `/events?topic=seed-7&source=src-3&since=${iso(mid - window / 2)}&until=${iso(mid + window / 2)}&before=${mid}`
    },
    { label: "topic + since/until (a 1-day window)", path: `/events?topic=seed-7&since=${iso(mid)}&until=${iso(mid + 86400)}` }
  ]
}

/**
 * GET /topics and the filtered pages (on `seeded` rows from `seedInsert`; `rows` in all), one connection each (latency without queueing), then the export of
 * `exportRows` rows seeded into one topic. `checks` collects pass/fail of what the answers must hold.
 */
export const readsPhase = async ({ agg, dbUrl, withClient, rows, seeded, duration, exportRows, say, checks }) => {
  const results = { pages: [] }
  say(`GET /topics at ${fmt(rows)} rows: ${duration} s, 1 connection`)
  await getLoad({ url: agg.url, path: "/topics", connections: 1, duration: 1 }) // warm-up
  const topics = await measured(agg, "/topics", duration)
  let listed
  try {
    listed = JSON.parse(topics.firstBody)
  } catch {
    listed = []
  }
  const counted = listed.reduce((sum, t) => sum + t.events, 0)
  const actual = await withClient(dbUrl, async (c) => Number((await c.query("SELECT count(*)::int8 AS n FROM events")).rows[0].n))
  const topicsOk = counted === actual
  checks.push(topicsOk)
  results.topics = {
    ...topics,
    text: `${fmt(listed.length)} topics, their counts sum to ${fmt(counted)} ${topicsOk ? "=" : "≠"} count(*) ${fmt(actual)} ${topicsOk ? "✓" : "✗"}`
  }
  say(`  p99 ${topics.p99} ms; CPU a request: aggregator ${topics.aggMs.toFixed(2)} ms, PostgreSQL ${topics.pgMs.toFixed(2)} ms; ${results.topics.text}`)

  for (const { label, path } of filteredPages(seeded)) {
    say(`GET ${path}: ${duration} s, 1 connection`)
    await getLoad({ url: agg.url, path, connections: 1, duration: 1 })
    const r = await measured(agg, path, duration)
    let events
    try {
      events = JSON.parse(r.firstBody)
    } catch {
      events = []
    }
    // the page must be what the filter selects: the 20 newest matches (fewer only if fewer match)
    const q = new URL(path, agg.url).searchParams
    const expected = await withClient(dbUrl, async (c) =>
      (await c.query(
        `SELECT seq FROM events WHERE topic = $1 AND ($2::text IS NULL OR source = $2)
           AND ($3::timestamptz IS NULL OR "timestamp" >= $3) AND ($4::timestamptz IS NULL OR "timestamp" < $4)
           AND ($5::int8 IS NULL OR seq < $5) ORDER BY seq DESC LIMIT 20`,
        [q.get("topic"), q.get("source"), q.get("since"), q.get("until"), q.get("before")]
      )).rows.map((row) => Number(row.seq)))
    const ok = JSON.stringify(events.map((e) => e.seq)) === JSON.stringify(expected)
    checks.push(ok)
    results.pages.push({ ...r, label, path, text: `${events.length} events, the newest matches ${ok ? "✓" : "✗"}` })
    say(`  p99 ${r.p99} ms; CPU a request: aggregator ${r.aggMs.toFixed(2)} ms, PostgreSQL ${r.pgMs.toFixed(2)} ms; ${events.length} events`)
  }

  say(`export: seeding ${fmt(exportRows)} rows into one topic`)
  await withClient(dbUrl, async (c) => {
    await c.query("SET synchronous_commit = off")
    for (let from = 1; from <= exportRows; from += 1_000_000) {
      const { rows: [{ n }] } = await c.query(seedInsert("'export'"), ["x", from, Math.min(exportRows, from + 999_999)])
      await c.query("UPDATE event_totals SET total = total + $1 WHERE shard = 0", [n])
    }
    await c.query("ANALYZE events") // as autovacuum would after a bulk load this size (not timed)
  })
  const baselineKb = rssKb(agg.pid)
  const rss = sampleRss(agg.pid, 100)
  const t0 = performance.now()
  const res = await fetch(`${agg.url}/events/export?topic=export`)
  let bytes = 0
  let lines = 0
  for await (const chunk of res.body) {
    bytes += chunk.length
    for (let i = 0; i < chunk.length; i++) if (chunk[i] === 10) lines++
  }
  const seconds = (performance.now() - t0) / 1000
  const mem = rss.stop()
  const exportOk = res.status === 200 && lines === exportRows
  checks.push(exportOk)
  results.export = {
    rows: exportRows,
    lines,
    bytes,
    seconds,
    baselineKb,
    maxSampleKb: mem.maxRssKb,
    samples: mem.samples,
    ok: exportOk
  }
  say(`  ${fmt(lines)} lines, ${fmt(bytes / 2 ** 20)} MiB in ${seconds.toFixed(1)} s; RSS ${fmt(baselineKb / 1024)} → largest sample ${fmt(mem.maxRssKb / 1024)} MiB`)
  return results
}
