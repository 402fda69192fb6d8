import { Redis } from "ioredis"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { StoredEvent } from "../../../src/domain/Event.js"
import { freePort, postJson, type Spawned, spawnAggregator, waitFor } from "../../support/aggregator.js"
import {
  redisUrl,
  skipWithoutPostgres,
  skipWithoutRedis,
  withoutPostgresNote,
  withoutRedisNote
} from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"
import { keyOf, privateRedis, sseClient, until } from "../../support/live.js"

// Replicas sharing one PostgreSQL and one Redis, as `node dist/aggregator` processes (run `npm run build`
// first). Every run uses its own key and channel prefix, so parallel runs on one Redis do not mix.

const skip = skipWithoutPostgres || skipWithoutRedis
const note = `${withoutPostgresNote}${withoutRedisNote}`
const prefix = () => `la-test-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}:`

const event = (topic: string, event_id: string) => ({ topic, event_id, timestamp: "2025-06-01T00:00:00Z", payload: { id: event_id } })
const stats = (url: string) => fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)

/** `/stats` once every stored event has been counted as announced or as failed (announcing runs behind the write). */
const settledStats = async (url: string) => {
  await until("every stored event counted as announced or failed", async () => {
    const s = await stats(url)
    return s.announcements.published + s.announcements.failed === s.uptime_stats.unique_processed
  })
  return stats(url)
}

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

/** A plain Redis client of the test's own, as an operator would use redis-cli. */
const redisClient = async (url: string) => {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  client.on("error", () => {})
  await client.connect()
  return client
}

/** Every event announced under `keyPrefix`, in arrival order, heard over Redis directly (PSUBSCRIBE). */
const listen = async (keyPrefix: string) => {
  const client = await redisClient(redisUrl)
  const heard: Array<StoredEvent> = []
  client.on("pmessage", (_pattern: string, _channel: string, message: string) => heard.push(JSON.parse(message)))
  await client.psubscribe(`${keyPrefix}events:*`)
  return { heard, close: () => client.quit() }
}

const countBy = (keys: ReadonlyArray<string>) => {
  const counts = new Map<string, number>()
  for (const k of keys) counts.set(k, (counts.get(k) ?? 0) + 1)
  return counts
}

describe.skipIf(skip)(`two replicas over one PostgreSQL and one Redis${note}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  let a: Spawned
  let b: Spawned
  const keyPrefix = prefix()
  beforeAll(async () => {
    db = await freshDatabase("replicas")
    const env = {
      DATABASE_URL: db.url,
      REDIS_URL: redisUrl,
      REDIS_PREFIX: keyPrefix,
      CLUSTER_STATS_INTERVAL_MS: "200",
      CLUSTER_STATS_TTL_MS: "3000"
    }
    a = spawnAggregator(env)
    b = spawnAggregator(env)
    await Promise.all([waitFor(`${await a.listening}/ready`), waitFor(`${await b.listening}/ready`)])
  })
  afterAll(async () => {
    await Promise.all([stop(a), stop(b)])
    await db?.drop()
  })

  it("2,000 events each sent to both at once (+30% re-sends): each stored once, streamed once everywhere, counters summed", async () => {
    const onA = sseClient(`${a.url}/events/stream`)
    const onB = sseClient(`${b.url}/events/stream`)
    const onATopic = sseClient(`${a.url}/events/stream?topic=t3`)
    const onBTopic = sseClient(`${b.url}/events/stream?topic=t5`)
    await Promise.all([onA.ready, onB.ready, onATopic.ready, onBTopic.ready])
    await probe(b.url, onA, "b-to-a")
    await probe(a.url, onB, "a-to-b")

    // Every event goes to both replicas at the same moment, so every key is raced across them; 600 of
    // them are sent once more, to one replica, mixed in among the rest.
    const distinct = Array.from({ length: 2000 }, (_, i) => event(`t${i % 7}`, `e${i}`))
    const repeats = Array.from({ length: 600 }, (_, i) => ({ e: distinct[(i * 7919) % distinct.length]!, to: [i % 2 === 0 ? a.url : b.url] }))
    const work = [...distinct.map((e) => ({ e, to: [a.url, b.url] })), ...repeats]
      .map((w, i) => ({ w, r: i * 2654435761 % 4603 })).sort((x, y) => x.r - y.r).map((x) => x.w)
    const answers = (await pool(work, 32, ({ e, to }) =>
      Promise.all(to.map((url) => postJson(`${url}/publish`, e).then((r) => ({ key: keyOf(e), status: r.status }))))
    )).flat()
    expect(answers.length).toBe(2 * distinct.length + repeats.length)
    expect(answers.filter((x) => x.status !== 200 && x.status !== 201)).toEqual([])
    expect(answers.filter((x) => x.status === 201).length).toBe(distinct.length)
    // exactly one 201 for each key, whichever replica or send won it
    const created = new Map<string, number>()
    for (const x of answers) if (x.status === 201) created.set(x.key, (created.get(x.key) ?? 0) + 1)
    expect(created.size).toBe(distinct.length)
    expect([...created.values()].every((n) => n === 1)).toBe(true)

    const rows = await query<{ n: string }>(db.url, `SELECT count(*) AS n FROM events WHERE topic <> 'probe'`)
    expect(Number(rows[0].n)).toBe(distinct.length)

    // announcements from one replica arrive in order: after its last one, nothing of its can still come
    for (const topic of ["end", "t3", "t5"]) {
      expect((await postJson(`${a.url}/publish`, event(topic, "end-a"))).status).toBe(201)
      expect((await postJson(`${b.url}/publish`, event(topic, "end-b"))).status).toBe(201)
    }
    const ends = (c: ReturnType<typeof sseClient>) => c.events.filter((e) => e.event_id.startsWith("end-")).length
    await until("the end markers on every stream", () =>
      ends(onA) === 6 && ends(onB) === 6 && ends(onATopic) === 2 && ends(onBTopic) === 2)

    const seen = (c: ReturnType<typeof sseClient>) =>
      c.events.filter((e) => e.topic !== "probe" && !e.event_id.startsWith("end-")).map(keyOf)
    for (const client of [onA, onB]) {
      expect(seen(client).length).toBe(distinct.length)
      expect(new Set(seen(client))).toEqual(new Set(distinct.map(keyOf)))
    }
    for (const [client, topic] of [[onATopic, "t3"], [onBTopic, "t5"]] as const) {
      expect(seen(client).length).toBe(distinct.filter((e) => e.topic === topic).length)
      expect(new Set(seen(client))).toEqual(new Set(distinct.filter((e) => e.topic === topic).map(keyOf)))
    }
    for (const c of [onA, onB, onATopic, onBTopic]) c.close()

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
    expect(s.cluster.uptime_stats.duplicate_dropped).toBe(distinct.length + repeats.length)
    expect(s.cluster.announcements).toEqual({ published: s.database_total_rows, failed: 0 })
  }, 180_000)

  it("each replica keeps its counters in Redis under an expiring key; one that dies stops counting", async () => {
    const redis = await redisClient(redisUrl)
    try {
      const replicaKeys = () => redis.keys(`${keyPrefix}stats:replica:*`)
      const keys = await replicaKeys()
      expect(keys.length).toBe(2)
      for (const key of keys) {
        expect(key).toMatch(/:stats:replica:[0-9a-f-]{36}$/)
        const ttl = await redis.pttl(key)
        expect(ttl).toBeGreaterThan(0)
        expect(ttl).toBeLessThanOrEqual(3000)
        expect(Object.keys(JSON.parse((await redis.get(key))!)).sort()).toEqual(["announcements", "storage_failures", "uptime_stats"])
      }
      // killed, it cannot withdraw: its key runs out (CLUSTER_STATS_TTL_MS) and the cluster is one replica again
      b.child.kill("SIGKILL")
      await b.exited
      await until("the dead replica's key to expire", async () => (await replicaKeys()).length === 1)
      await until("the cluster to count one replica", async () => (await stats(a.url)).cluster.replicas === 1)
      const s = await stats(a.url)
      expect(s.cluster.uptime_stats).toEqual(s.uptime_stats)
    } finally {
      await redis.quit()
    }
  })
})

describe.skipIf(skip)(`a replica started while its Redis is not running yet${note}`, () => {
  it("stores and answers, counts every announcement as failed, and once Redis is up streams and announces without a restart", async () => {
    const db = await freshDatabase("redislate")
    const port = await freePort()
    const keyPrefix = prefix()
    const agg = spawnAggregator({
      DATABASE_URL: db.url,
      REDIS_URL: `redis://127.0.0.1:${port}`,
      REDIS_PREFIX: keyPrefix,
      CLUSTER_STATS_INTERVAL_MS: "200"
    })
    let redis: Awaited<ReturnType<typeof privateRedis>> | undefined
    try {
      await waitFor(`${await agg.listening}/ready`)
      // subscribed in this process at once; its events come from Redis, so none yet
      const early = sseClient(`${agg.url}/events/stream`)
      await early.ready

      const events = Array.from({ length: 120 }, (_, i) => event("early", `x${i % 100}`))
      const statuses = await pool(events, 16, (e) => postJson(`${agg.url}/publish`, e).then((r) => r.status))
      expect(statuses.filter((s) => s === 201).length).toBe(100)
      expect(statuses.filter((s) => s === 200).length).toBe(20)
      const down = await settledStats(agg.url)
      expect(down.announcements).toEqual({ published: 0, failed: 100 })
      expect(down.database_total_rows).toBe(100)
      expect(down.cluster.replicas).toBe(1)
      expect(early.events).toEqual([])

      redis = await privateRedis(port)
      // the client from before Redis existed is served once the subscriber connects
      await probe(agg.url, early, "late")
      const later = Array.from({ length: 50 }, (_, i) => event("later", `y${i}`))
      expect(await pool(later, 16, (e) => postJson(`${agg.url}/publish`, e).then((r) => r.status))).toEqual(later.map(() => 201))
      await until("the early client to see every later event", () => early.events.filter((e) => e.topic === "later").length === 50)
      expect(new Set(early.events.filter((e) => e.topic === "later").map(keyOf))).toEqual(new Set(later.map(keyOf)))
      expect(early.events.filter((e) => e.topic === "early")).toEqual([])

      const up = await settledStats(agg.url)
      // the probe that got through and the 50 later events
      expect(up.announcements.published).toBeGreaterThanOrEqual(51)
      expect(up.announcements.failed).toBeGreaterThanOrEqual(100)
      // and its counters reach Redis for the cluster section
      const client = await redisClient(redis.url)
      try {
        await until("this replica's counters in Redis", async () => (await client.keys(`${keyPrefix}stats:replica:*`)).length === 1)
      } finally {
        await client.quit()
      }
      early.close()
    } finally {
      await stop(agg)
      await redis?.stop()
      await db.drop()
    }
  })
})

describe.skipIf(skip)(`transactions that roll back on real PostgreSQL, announced over real Redis${note}`, () => {
  it("announces every stored event once and never one whose transaction rolled back", async () => {
    const db = await freshDatabase("rollback")
    const keyPrefix = prefix()
    // a short gathering window, so concurrent submissions share flushes and roll back together
    const env = { DATABASE_URL: db.url, REDIS_URL: redisUrl, REDIS_PREFIX: keyPrefix, FLUSH_WINDOW_MS: "10" }
    const a = spawnAggregator(env)
    const b = spawnAggregator(env)
    const redis = await listen(keyPrefix)
    try {
      await Promise.all([waitFor(`${await a.listening}/ready`), waitFor(`${await b.listening}/ready`)])
      // the migrations have run: any transaction that inserts a 'poison' row now fails and rolls back whole
      await query(db.url, `
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.topic = 'poison' THEN RAISE EXCEPTION 'poisoned event %', NEW.event_id; END IF;
          RETURN NEW;
        END $$`)
      await query(db.url, `CREATE TRIGGER refuse_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_poison()`)
      const onB = sseClient(`${b.url}/events/stream`)
      await onB.ready
      await probe(a.url, onB, "a-to-b")

      const single = (e: ReturnType<typeof event>) => ({ kind: "single" as const, events: [e] })
      const batch = (events: Array<ReturnType<typeof event>>) => ({ kind: "batch" as const, events })
      const work = [
        ...Array.from({ length: 400 }, (_, i) => single(event("ok", `s${i}`))),
        ...Array.from({ length: 20 }, (_, i) => single(event("poison", `p${i}`))),
        // a poisoned batch is one transaction: its innocent events roll back with it
        ...Array.from({ length: 5 }, (_, i) => batch([...Array.from({ length: 9 }, (_, j) => event("ok", `m${i}-${j}`)), event("poison", `pb${i}`)])),
        ...Array.from({ length: 5 }, (_, i) => batch(Array.from({ length: 10 }, (_, j) => event("ok", `c${i}-${j}`))))
      ].map((w, i) => ({ w, r: i * 2654435761 % 431 })).sort((x, y) => x.r - y.r).map((x) => x.w)
      const send = (w: (typeof work)[number]) =>
        w.kind === "single"
          ? postJson(`${a.url}/publish`, w.events[0]).then((r) => r.status)
          : postJson(`${a.url}/publish/batch`, w.events).then((r) => r.status)
      const statuses = await pool(work, 32, send)
      const refused = work.filter((_, i) => statuses[i] === 503)
      expect(statuses.filter((s) => s !== 201 && s !== 200 && s !== 503)).toEqual([])
      for (const [i, w] of work.entries()) {
        if (w.events.some((e) => e.topic === "poison")) expect(statuses[i]).toBe(503)
      }
      // innocents that shared a flush with a poisoned event (the batches, and single events gathered with one)
      const rolledBack = refused.flatMap((w) => w.events).filter((e) => e.topic === "ok")
      expect(rolledBack.length).toBeGreaterThanOrEqual(45)

      const storedRows = async () =>
        (await query<{ topic: string; event_id: string; seq: string }>(db.url, `SELECT topic, event_id, seq FROM events`))
          .map((r) => ({ key: keyOf(r), seq: Number(r.seq) }))
      let endMarkers = 0
      /** Stores a marker through `a`; its announcement arrives after every earlier one of `a`'s. */
      const settle = async () => {
        const id = `end-${endMarkers++}`
        expect((await postJson(`${a.url}/publish`, event("end", id))).status).toBe(201)
        await until("the end marker over Redis and on the other replica's stream", () =>
          redis.heard.some((e) => e.event_id === id) && onB.events.some((e) => e.event_id === id))
      }
      /** What was announced is exactly what is stored (same rows, same seq), each once; likewise on B's stream. */
      const expectAnnouncedAsStored = async () => {
        const rows = await storedRows()
        expect(rows.filter((r) => r.key.startsWith("poison\u0000"))).toEqual([])
        const heard = redis.heard.map((e) => ({ key: keyOf(e), seq: e.seq }))
        expect([...countBy(heard.map((h) => h.key)).values()].every((n) => n === 1)).toBe(true)
        const bySeq = (x: { seq: number }, y: { seq: number }) => x.seq - y.seq
        expect([...heard].sort(bySeq)).toEqual([...rows].sort(bySeq))
        // B's client joined after the trigger; it misses only the probes sent before its subscription was live
        const streamed = onB.events.filter((e) => e.topic !== "probe").map((e) => ({ key: keyOf(e), seq: e.seq }))
        expect([...streamed].sort(bySeq)).toEqual(rows.filter((r) => !r.key.startsWith("probe\u0000")).sort(bySeq))
        return rows
      }

      await settle()
      const rows = await expectAnnouncedAsStored()
      // every innocent answered 201/200 is stored, and none answered 503
      expect(rows.filter((r) => r.key.startsWith("ok\u0000")).map((r) => r.key).sort())
        .toEqual(work.filter((_, i) => statuses[i] !== 503).flatMap((w) => w.events).map(keyOf).sort())
      const heardKeys = new Set(redis.heard.map(keyOf))
      expect(rolledBack.filter((e) => heardKeys.has(keyOf(e)))).toEqual([])

      // retried, the rolled-back innocents are stored and announced (once); re-sent stored ones and the
      // poison again are not
      const stored = work.filter((_, i) => statuses[i] !== 503).flatMap((w) => w.events).slice(0, 50)
      expect(await pool(rolledBack, 16, (e) => postJson(`${a.url}/publish`, e).then((r) => r.status))).toEqual(rolledBack.map(() => 201))
      expect(await pool(stored, 16, (e) => postJson(`${a.url}/publish`, e).then((r) => r.status))).toEqual(stored.map(() => 200))
      expect((await postJson(`${a.url}/publish`, event("poison", "again"))).status).toBe(503)
      await settle()
      await expectAnnouncedAsStored()
      const after = new Set(redis.heard.map(keyOf))
      expect(rolledBack.filter((e) => !after.has(keyOf(e)))).toEqual([])

      // a replica counts a publish once Redis has answered it, which may be just after the subscribers heard it
      await until("the announcements counted", async () => (await stats(a.url)).announcements.published === redis.heard.length)
      const [sa, sb] = await Promise.all([stats(a.url), stats(b.url)])
      expect(sa.announcements).toEqual({ published: sa.uptime_stats.unique_processed, failed: 0 })
      expect(sb.announcements).toEqual({ published: 0, failed: 0 })
      expect(sa.storage_failures).toBeGreaterThan(0)
      onB.close()
    } finally {
      await redis.close()
      await Promise.all([stop(a), stop(b)])
      await db.drop()
    }
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
    })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const before = sseClient(`${agg.url}/events/stream`)
      await before.ready
      await probe(agg.url, before, "up")

      await redis.stop()
      const events = Array.from({ length: 200 }, (_, i) => event("down", `d${i % 150}`))
      const statuses = await pool(events, 16, (e) => postJson(`${agg.url}/publish`, e).then((r) => r.status))
      expect(statuses.filter((s) => s !== 200 && s !== 201)).toEqual([])
      expect(statuses.filter((s) => s === 201).length).toBe(150)
      const down = await settledStats(agg.url)
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
