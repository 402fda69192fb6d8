// The embedded phase of `npm run bench`: the aggregator on its default store (PGlite in a fresh DATA_DIR, no
// DATABASE_URL) under the same single-event and batch loads as the server phases, its first start timed against
// a start on the PostgreSQL server, events per commit read from /metrics, and its peak memory (VmHWM, so the
// first start is included). The rows are checked by opening DATA_DIR with PGlite after the aggregator stopped.
import { PGlite } from "@electric-sql/pglite"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import os from "node:os"
import { join } from "node:path"
import { measureCpu, sampleRss } from "./aggregator.mjs"
import { batch, fmt, singleEvent } from "./workloads.mjs"

const hwmKb = (pid) => Number(/^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

const perCommit = async (url) => {
  const text = await (await fetch(`${url}/metrics`)).text()
  const value = (name) => Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1])
  return { events: value("aggregator_batch_size_events_sum"), commits: value("aggregator_batch_size_events_count") }
}

/**
 * `start`/`stop` are the bench's (they track running aggregators); `serverUrl` is a fresh PostgreSQL database for
 * the ready-time comparison; `checks` collects pass/fail of the row checks.
 */
export const embeddedPhase = async ({ start, stop, serverUrl, cfg, say, checks, starts = 3 }) => {
  const root = mkdtempSync(join(os.tmpdir(), "bench-embedded-"))
  try {
    // first starts on a new data directory, alternated with starts on the server so both see the same machine
    const ready = { embedded: [], server: [] }
    for (let i = 0; i < starts; i++) {
      for (const [kind, env] of [["embedded", { DATABASE_URL: undefined, DATA_DIR: join(root, `ready-${i}`) }], ["server", {}]]) {
        const t0 = Date.now()
        const agg = await start({ name: `ready-${kind}-${i}`, databaseUrl: serverUrl, env })
        ready[kind].push((Date.now() - t0) / 1000)
        await stop(agg)
      }
    }
    const readyEmbedded = median(ready.embedded)
    const readyServer = median(ready.server)
    say(`  until /ready, median of ${starts}: embedded first start ${readyEmbedded.toFixed(2)} s, PostgreSQL server ${readyServer.toFixed(2)} s`)

    const dataDir = join(root, "data")
    const agg = await start({ name: "embedded", databaseUrl: undefined, env: { DATABASE_URL: undefined, DATA_DIR: dataDir } })
    say(`embedded single-event: warm-up ${cfg.warmup} s, then ${cfg.duration} s, ${cfg.connections} connections`)
    await singleEvent({ url: agg.url, topic: "warmup", prefix: "w", connections: cfg.connections, duration: cfg.warmup, dupShare: cfg.dupShare })
    const before = await perCommit(agg.url)
    const single = await measureCpu(agg.pid, () =>
      singleEvent({ url: agg.url, topic: "single", prefix: "e", connections: cfg.connections, duration: cfg.duration, dupShare: cfg.dupShare })
    )
    const after = await perCommit(agg.url)
    const eventsPerCommit = (after.events - before.events) / (after.commits - before.commits)
    say(`  ${fmt(single.result.eventsPerSec)} events/s, ${fmt(eventsPerCommit, 1)} events per commit`)

    say(`embedded batch: ${fmt(cfg.batchRequests)} requests × ${fmt(cfg.batchSize)} events, ${cfg.batchConnections} connections`)
    const rss = sampleRss(agg.pid, 100)
    const batched = await measureCpu(agg.pid, () =>
      batch({ url: agg.url, topic: "batch", connections: cfg.batchConnections, amount: cfg.batchRequests, batchSize: cfg.batchSize })
    )
    const mem = rss.stop()
    const peakKb = hwmKb(agg.pid)
    say(`  ${fmt(batched.result.eventsPerSec)} events/s; peak RSS since start ${fmt(peakKb / 1024)} MiB`)
    await stop(agg)

    const db = await PGlite.create(dataDir)
    let singleVerify, batchVerify
    try {
      const ids = (await db.query("SELECT event_id FROM events WHERE topic = 'single'")).rows.map((r) => r.event_id)
      singleVerify = single.result.verify(ids)
      const n = Number((await db.query("SELECT count(*)::int AS n FROM events WHERE topic = 'batch'")).rows[0].n)
      batchVerify = batched.result.verify(n)
    } finally {
      await db.close()
    }
    checks.push(singleVerify.ok, batchVerify.ok)
    return {
      readyEmbedded,
      readyServer,
      ready,
      single: { ...single.result, cpu: single.cpu, verify: singleVerify, eventsPerCommit },
      batch: { ...batched.result, cpu: batched.cpu, verify: batchVerify },
      peakKb,
      maxRssKb: mem.maxRssKb
    }
  } finally {
    rmSync(root, { recursive: true, force: true })
  }
}

/** The phase's rows of the results table (same columns as the others) and its targets, against the server's single-event run. */
export const embeddedRows = (e, serverSingle, cfg, { ms, cpuText }) => {
  const ratio = e.single.eventsPerSec / serverSingle.eventsPerSec
  const readyRatio = e.readyEmbedded / e.readyServer
  const peakMiB = e.peakKb / 1024
  const verdict = (pass, text) => `${pass ? "PASS" : "MISS"} (${text})`
  return [
    [
      `embedded (PGlite): POST /publish single-event (${cfg.connections} conn, ${cfg.duration} s, ${Math.round(cfg.dupShare * 100)}% re-sends)`,
      `${fmt(e.single.eventsPerSec)} events/s`,
      ms(e.single.p50),
      ms(e.single.p99),
      e.single.non2xx ? fmt(e.single.non2xx) : "0",
      cpuText(e.single.cpu),
      `${fmt(e.single.eventsPerCommit, 1)} events per commit; ${e.single.verify.text}`
    ],
    [
      `embedded (PGlite): POST /publish/batch, ${fmt(cfg.batchSize)} events a request (${cfg.batchConnections} conn, ${fmt(cfg.batchRequests)} requests)`,
      `${fmt(e.batch.eventsPerSec)} events/s`,
      ms(e.batch.p50),
      ms(e.batch.p99),
      e.batch.non2xx ? fmt(e.batch.non2xx) : "0",
      cpuText(e.batch.cpu),
      e.batch.verify.text
    ],
    [
      "embedded (PGlite): first start on a new DATA_DIR until /ready, and peak RSS from that start through both runs",
      `${e.readyEmbedded.toFixed(2)} s`,
      "—",
      "—",
      "—",
      "—",
      `median of ${e.ready.embedded.length} (${e.ready.embedded.map((s) => s.toFixed(2)).join(", ")} s); the server's start ` +
        `${e.readyServer.toFixed(2)} s (${e.ready.server.map((s) => s.toFixed(2)).join(", ")}); VmHWM ${fmt(peakMiB)} MiB`
    ],
    [`target: embedded single-event ≥ 0.7× the server's (group commit ON)`, verdict(ratio >= 0.7, `${ratio.toFixed(2)}×`), "", "", "", "", ""],
    [`target: embedded ≥ 8 events per commit`, verdict(e.single.eventsPerCommit >= 8, fmt(e.single.eventsPerCommit, 1)), "", "", "", "", ""],
    [`target: embedded first start ready ≤ 2× the server's`, verdict(readyRatio <= 2, `${readyRatio.toFixed(2)}×`), "", "", "", "", ""],
    [`target: embedded peak RSS ≤ 350 MiB, first start included`, verdict(peakMiB <= 350, `${fmt(peakMiB)} MiB`), "", "", "", "", ""]
  ]
}
