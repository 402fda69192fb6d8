import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import * as fc from "effect/FastCheck"
import { afterAll } from "vitest"
import { parseDuration } from "../../../src/aggregator/Config.js"
import { postJson, spawnAggregator, type Spawned, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"
import { freePort, until } from "../../support/live.js"
import { parseExposition, valueOf } from "../../support/prometheus.js"

const units = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

describe("RETENTION's durations", () => {
  it.prop("a count and a unit read as that many of the unit", [
    fc.integer({ min: 1, max: 10_000 }),
    fc.constantFrom(...Object.keys(units) as Array<keyof typeof units>)
  ], ([n, unit]) => {
    expect(Duration.toMillis(parseDuration(`${n}${unit}`)!)).toBe(n * units[unit])
  })

  it.prop("anything else is refused", [fc.string().filter((s) => !/^\s*\d+(ms|s|m|h|d)\s*$/.test(s))], ([text]) => {
    expect(parseDuration(text)).toBeUndefined()
  })

  it("zero is not a window", () => {
    expect(parseDuration("0s")).toBeUndefined()
    expect(parseDuration("30d")).toEqual(Duration.days(30))
  })
})

const started: Array<Spawned> = []
const cleanup: Array<() => Promise<unknown>> = []
afterAll(async () => {
  for (const s of started) {
    s.child.kill("SIGTERM")
    await s.exited
  }
  for (const f of cleanup) await f()
})

const json = async (url: string) => (await fetch(url)).json() as Promise<any>

const WINDOW_SECONDS = 6

/**
 * One aggregator with a 6 s window, swept every 200 ms: two events expire and are deleted, a third sent 3 s
 * later is still there; the expired key is stored again, the live one is still a duplicate; `/stats` and
 * `/metrics` count every deletion, and the row count matches the rows at every step, down to zero.
 */
const scenario = async (url: string) => {
  const ev = (id: string) => ({ topic: "kept", event_id: id, timestamp: "2025-06-01T00:00:00Z", payload: { id } })
  const listed = async () => ((await json(`${url}/events?limit=1000`)) as Array<unknown>).length
  const exact = async () => {
    const stats = await json(`${url}/stats`)
    expect(stats.database_total_rows).toBe(await listed())
    return stats
  }
  expect((await postJson(`${url}/publish/batch`, [ev("a"), ev("b")])).status).toBe(200)
  expect((await exact()).retention).toEqual({ window_seconds: WINDOW_SECONDS, deleted: 0 })
  await new Promise((r) => setTimeout(r, 3_000))
  expect((await postJson(`${url}/publish`, ev("c"))).status).toBe(201)

  await until("a and b to expire", async () => (await fetch(`${url}/events/kept/a`)).status === 404, 20_000)
  expect((await fetch(`${url}/events/kept/b`)).status).toBe(404)
  // c is 3 s younger: still stored, so still a duplicate; a was deleted, so it is stored again
  expect((await postJson(`${url}/publish`, ev("c"))).status).toBe(200)
  expect((await postJson(`${url}/publish`, ev("a"))).status).toBe(201)
  const after = await exact()
  expect(after.retention).toEqual({ window_seconds: WINDOW_SECONDS, deleted: 2 })
  expect(after.database_total_rows).toBe(2)

  await until("everything to expire", async () => (await listed()) === 0, 30_000)
  const last = await exact()
  expect(last.database_total_rows).toBe(0)
  expect(last.retention.deleted).toBe(4)
  const metrics = parseExposition(await (await fetch(`${url}/metrics`)).text())
  expect(valueOf(metrics, "aggregator_retention_deleted_total")).toBe(4)
}

const env = { RETENTION: `${WINDOW_SECONDS}s`, RETENTION_INTERVAL: "200ms" }

describe("retention on a running aggregator", () => {
  it.live.skipIf(skipWithoutPostgres)(`on PostgreSQL: events expire, totals stay exact, expired keys are stored again${withoutPostgresNote}`, () =>
    Effect.promise(async () => {
      const db = await freshDatabase("ret")
      cleanup.push(db.drop)
      const aggregator = spawnAggregator({ DATABASE_URL: db.url, ...env }, await freePort())
      started.push(aggregator)
      await waitFor(`${aggregator.url}/ready`)
      await scenario(aggregator.url)
      const rows = await query(db.url, "SELECT count(*)::int AS n, (SELECT sum(total)::int FROM event_totals) AS total FROM events")
      expect(rows[0]).toEqual({ n: 0, total: 0 })
    }), { timeout: 90_000 })

  it.live(`on the embedded PGlite default: the same`, () =>
    Effect.promise(async () => {
      const aggregator = spawnAggregator({ DATA_DIR: "memory://", ...env }, await freePort())
      started.push(aggregator)
      await waitFor(`${aggregator.url}/ready`, 60_000)
      await scenario(aggregator.url)
    }), { timeout: 120_000 })

  it.live("an invalid RETENTION stops the start with a message that names it", () =>
    Effect.promise(async () => {
      const aggregator = spawnAggregator({ DATA_DIR: "memory://", RETENTION: "30 days" }, await freePort())
      started.push(aggregator)
      expect(await aggregator.exited).not.toBe(0)
      expect(aggregator.output()).toContain("RETENTION must be a positive duration such as 30d, 12h, 15m or 90s, got '30 days'")
    }), { timeout: 60_000 })
})
