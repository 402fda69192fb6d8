import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { postJson, type Spawned, spawnAggregator, waitFor } from "./support/aggregator.js"
import {
  redisUrl,
  skipWithoutPostgres,
  skipWithoutRedis,
  withoutPostgresNote,
  withoutRedisNote
} from "./support/backends.js"
import { freshDatabase, query } from "./support/database.js"
import { freePort, keyOf, privateRedis, sseClient, until } from "./support/live.js"

// Replicas sharing one PostgreSQL and one Redis, as `node dist/aggregator` processes (run `npm run build`
// first). Every run uses its own key and channel prefix, so parallel runs on one Redis do not mix.

const skip = skipWithoutPostgres || skipWithoutRedis
const note = `${withoutPostgresNote}${withoutRedisNote}`
const prefix = () => `la-test-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}:`

const event = (topic: string, event_id: string) => ({ topic, event_id, timestamp: "2025-06-01T00:00:00Z", payload: { id: event_id } })
const stats = (url: string) => fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)

const stop = async (agg: Spawned | undefined) => {
  if (agg === undefined) return
  agg.child.kill("SIGTERM")
  await agg.exited
}

/** Runs `f` over `items` with at most `n` at a time. */
const pool = async <A, B>(items: ReadonlyArray<A>, n: number, f: (a: A) => Promise<B>): Promise<Array<B>> => {
  const out: Array<B> = new Array(items.length)
  let next = 0
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await f(items[i]!)
    }
  }))
  return out
}

/** Stores fresh probe events through `via` until `client` has seen one: its replica's subscription is live. */
const probe = async (via: string, client: ReturnType<typeof sseClient>, label: string) => {
  let n = 0
  await until(`${label} to see an event`, async () => {
    const id = `${label}-${n++}`
    expect((await postJson(`${via}/publish`, event("probe", id))).status).toBe(201)
    await new Promise((r) => setTimeout(r, 100))
    return client.events.some((e) => e.topic === "probe" && e.event_id.startsWith(label))
  })
}

describe.skipIf(skip)(`two replicas over one PostgreSQL and one Redis${note}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  let a: Spawned
  let b: Spawned
  beforeAll(async () => {
    db = await freshDatabase("replicas")
    const env = {
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      REDIS_PREFIX: prefix(),
      CLUSTER_STATS_INTERVAL_MS: "200",
      CLUSTER_STATS_TTL_MS: "3000"
    }
    a = spawnAggregator(env, await freePort())
    b = spawnAggregator(env, await freePort())
    await Promise.all([waitFor(`${a.url}/ready`), waitFor(`${b.url}/ready`)])
  })
  afterAll(async () => {
    await Promise.all([stop(a), stop(b)])
    await db?.drop()
  })

  it("2,000 events (+30% duplicates) sent to both at once: each stored once, streamed once to both, counters summed", async () => {
    const onA = sseClient(`${a.url}/events/stream`)
    const onB = sseClient(`${b.url}/events/stream`)
    const onATopic = sseClient(`${a.url}/events/stream?topic=t3`)
    await Promise.all([onA.ready, onB.ready, onATopic.ready])
    await probe(b.url, onA, "b-to-a")
    await probe(a.url, onB, "a-to-b")

    const distinct = Array.from({ length: 2000 }, (_, i) => event(`t${i % 7}`, `e${i}`))
    const repeats = Array.from({ length: 600 }, (_, i) => distinct[(i * 7919) % distinct.length]!)
    const all = [...distinct, ...repeats].map((e, i) => ({ e, r: i * 2654435761 % 1000 }))
      .sort((x, y) => x.r - y.r).map((x, i) => ({ e: x.e, target: i % 2 === 0 ? a.url : b.url }))
    const statuses = await pool(all, 32, ({ e, target }) => postJson(`${target}/publish`, e).then((r) => r.status))
    expect(statuses.filter((s) => s !== 200 && s !== 201)).toEqual([])
    expect(statuses.filter((s) => s === 201).length).toBe(distinct.length)

    const rows = await query<{ n: string }>(db.url, `SELECT count(*) AS n FROM events WHERE topic <> 'probe'`)
    expect(Number(rows[0].n)).toBe(distinct.length)

    // announcements from one replica arrive in order: after its last one, nothing of its can still come
    await postJson(`${a.url}/publish`, event("end", "a"))
    await postJson(`${b.url}/publish`, event("end", "b"))
    const sawEnd = (c: ReturnType<typeof sseClient>) => c.events.filter((e) => e.topic === "end").length === 2
    await until("the end markers on both streams", () => sawEnd(onA) && sawEnd(onB))

    for (const client of [onA, onB]) {
      const keys = client.events.filter((e) => e.topic !== "probe" && e.topic !== "end").map(keyOf)
      expect(keys.length).toBe(distinct.length)
      expect(new Set(keys)).toEqual(new Set(distinct.map(keyOf)))
    }
    expect(new Set(onATopic.events.map(keyOf))).toEqual(new Set(distinct.filter((e) => e.topic === "t3").map(keyOf)))
    expect(onATopic.events.length).toBe(distinct.filter((e) => e.topic === "t3").length)
    for (const c of [onA, onB, onATopic]) c.close()

    // the cluster section is the sum of both replicas' own counters, as soon as both have reported
    await until("cluster counters equal to the sum of the replicas'", async () => {
      const [sa, sb] = await Promise.all([stats(a.url), stats(b.url)])
      const sum = (k: string) => sa.uptime_stats[k] + sb.uptime_stats[k]
      const expected = {
        uptime_stats: {
          received: sum("received"),
          unique_processed: sum("unique_processed"),
          duplicate_dropped: sum("duplicate_dropped"),
          rejected: sum("rejected")
        },
        storage_failures: sa.storage_failures + sb.storage_failures,
        announcements: {
          published: sa.announcements.published + sb.announcements.published,
          failed: sa.announcements.failed + sb.announcements.failed
        },
        replicas: 2
      }
      try {
        expect(sa.cluster).toEqual(expected)
        expect(sb.cluster).toEqual(expected)
        return true
      } catch {
        return false
      }
    })
    const s = await stats(a.url)
    expect(s.cluster.uptime_stats.unique_processed).toBe(s.database_total_rows)
    expect(s.cluster.uptime_stats.duplicate_dropped).toBe(repeats.length)
    expect(s.cluster.announcements).toEqual({ published: s.database_total_rows, failed: 0 })
  })
})

describe.skipIf(skip)(`a replica whose Redis goes away and comes back${note}`, () => {
  it("keeps ingesting while Redis is down, counts failed announcements, and resumes without a restart", async () => {
    const db = await freshDatabase("redisdown")
    const port = await freePort()
    let redis = await privateRedis(port)
    const agg = spawnAggregator({
      DATABASE_URL: db.url,
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix(),
      CLUSTER_STATS_INTERVAL_MS: "200"
    }, await freePort())
    try {
      await waitFor(`${agg.url}/ready`)
      const before = sseClient(`${agg.url}/events/stream`)
      await before.ready
      await probe(agg.url, before, "up")

      await redis.stop()
      const events = Array.from({ length: 200 }, (_, i) => event("down", `d${i % 150}`))
      const statuses = await pool(events, 16, (e) => postJson(`${agg.url}/publish`, e).then((r) => r.status))
      expect(statuses.filter((s) => s !== 200 && s !== 201)).toEqual([])
      expect(statuses.filter((s) => s === 201).length).toBe(150)
      await until("every stored event counted as announced or failed", async () => {
        const s = await stats(agg.url)
        return s.announcements.published + s.announcements.failed === s.uptime_stats.unique_processed
      })
      const down = await stats(agg.url)
      expect(down.announcements.failed).toBeGreaterThan(0)
      // without Redis the cluster section falls back to this replica alone
      expect(down.cluster.replicas).toBe(1)
      expect(before.events.filter((e) => e.topic === "down").length).toBeLessThanOrEqual(150 - down.announcements.failed)

      redis = await privateRedis(port)
      const after = sseClient(`${agg.url}/events/stream`)
      await after.ready
      await probe(agg.url, after, "back")
      const up = await stats(agg.url)
      expect(up.announcements.published).toBeGreaterThan(down.announcements.published)
      // the client from before the outage is still served
      await until("the old client to see events again", () => before.events.some((e) => e.event_id.startsWith("back")))
      before.close()
      after.close()
    } finally {
      await stop(agg)
      await redis.stop()
      await db.drop()
    }
  })
})
