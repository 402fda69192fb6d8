import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, postJson, spawnAggregator, startAggregator, waitFor, withClient } from "../../support/aggregator.js"
import { startProxy, until } from "../../support/live.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"

// `node dist/aggregator` as a real process: start-up, restart and shutdown behaviour.

const event = (topic: string, event_id: string) => ({ topic, event_id, timestamp: "2025-06-01T00:00:00Z" })

let db: Awaited<ReturnType<typeof freshDatabase>>


describe.skipIf(skipWithoutPostgres)(`aggregator process${withoutPostgresNote}`, () => {
  beforeAll(async () => {
    db = await freshDatabase("proc")
  })
  afterAll(async () => {
    await db?.drop()
  })

  it("keeps its data across a restart: a re-sent event is a duplicate", async () => {
    const first = await startAggregator({ DATABASE_URL: db.url })
    try {
      expect(await withClient(first.url, (c) => c.events.publish({ payload: event("restart", "r1") })))
        .toEqual({ status: "processed", id: "r1", topic: "restart" })
    } finally {
      first.child.kill("SIGTERM")
    }
    expect(await first.exited).toBe(0)

    const second = await startAggregator({ DATABASE_URL: db.url })
    try {
      expect(await withClient(second.url, (c) => c.events.publish({ payload: event("restart", "r1") })))
        .toEqual({ status: "dropped_duplicate", id: "r1", topic: "restart" })
      expect((await withClient(second.url, (c) => c.health.stats())).database_total_rows).toBe(1)
    } finally {
      second.child.kill("SIGTERM")
    }
    expect(await second.exited).toBe(0)
  })

  it("starts with the database unreachable: alive, 503 with Retry-After meanwhile, then serves without a restart", async () => {
    const dbPort = await freePort()
    const url = new URL(db.url)
    url.port = String(dbPort)
    const agg = spawnAggregator({ DATABASE_URL: url.toString(), DB_RETRY_MAX_DELAY_MS: "400" })
    let proxy: { close: () => Promise<void> } | undefined
    try {
      await waitFor(`${await agg.listening}/`)
      const notReady = await fetch(`${agg.url}/ready`)
      expect(notReady.status).toBe(503)
      const reason: any = await notReady.json()
      expect(reason.error).toBe("not_ready")
      expect(typeof reason.reason).toBe("string")

      const refused = await postJson(`${agg.url}/publish`, event("late", "l1"))
      expect(refused.status).toBe(503)
      expect(refused.headers.get("retry-after")).toMatch(/^\d+$/)
      expect(((await refused.json()) as any).error).toBe("storage_unavailable")

      // the retries are logged while the database is away: wait for that line before it appears
      await until("the aggregator to log its database retries", () => /database not ready; retrying/.test(agg.output()))
      proxy = await startProxy(dbPort, db.url)

      await waitFor(`${await agg.listening}/ready`, 20_000)
      expect(agg.child.exitCode).toBeNull()
      expect((await postJson(`${agg.url}/publish`, event("late", "l1"))).status).toBe(201)
    } finally {
      agg.child.kill("SIGTERM")
      await agg.exited
      await proxy?.close()
    }
    expect(await agg.exited).toBe(0)
  })

  it("SIGTERM with Redis unreachable since start-up: exits, code 0", async () => {
    // Port 1: nothing listens, so the broker's connections never come up.
    const agg = spawnAggregator(
      { DATABASE_URL: db.url, REDIS_URL: "redis://127.0.0.1:1", SHUTDOWN_TIMEOUT_MS: "3000" }
    )
    await waitFor(`${await agg.listening}/ready`)
    agg.child.kill("SIGTERM")
    // Before the fix the process was still alive minutes later; 30 s is a generous bound, not a latency check.
    const code = await Promise.race([agg.exited, new Promise<"alive">((r) => setTimeout(() => r("alive"), 30_000))])
    if (code === "alive") agg.child.kill("SIGKILL")
    expect(code).toBe(0)
    expect(agg.output()).toMatch(/drained/)
  })

  it("SIGTERM under load: in-flight requests complete, every 201 is in the database, exit code 0", async () => {
    const agg = spawnAggregator({ DATABASE_URL: db.url })
    await waitFor(`${await agg.listening}/ready`)
    const topic = `term-${Date.now()}`
    let sentSignal = false
    const outcomes = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        postJson(`${agg.url}/publish`, event(topic, `k${i}`)).then(
          (r) => {
            if (!sentSignal) {
              sentSignal = true
              agg.child.kill("SIGTERM")
            }
            return { i, status: r.status }
          },
          () => ({ i, status: 0 })
        ))
    )
    const code = await agg.exited
    expect(code).toBe(0)
    const acked = outcomes.filter((o) => o.status === 201).map((o) => `k${o.i}`)
    expect(acked.length).toBeGreaterThan(0)
    // nothing answered with a server error: either a real answer or no connection at all
    expect(outcomes.filter((o) => o.status >= 500)).toEqual([])
    const rows = await query(db.url, "SELECT event_id FROM events WHERE topic = $1", [topic])
    const stored = new Set(rows.map((r) => r.event_id))
    expect(acked.filter((k) => !stored.has(k))).toEqual([])
  })
})
