import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, FastCheck as fc, Layer } from "effect"
import * as net from "node:net"
import { afterAll, beforeAll, describe as plainDescribe, expect as plainExpect, it as plainIt } from "vitest"
import { Batcher } from "../../../src/aggregator/ingest/Batcher.js"
import { Broker, inSends } from "../../../src/aggregator/live/Broker.js"
import { AggregatorConfig } from "../../../src/aggregator/Config.js"
import { eventKey, type NewEvent } from "../../../src/aggregator/storage/EventStore.js"
import { sseFrame, type Tail } from "../../../src/aggregator/live/StreamHub.js"
import { Overloaded, StorageUnavailable } from "../../../src/domain/Errors.js"
import type { StoredEvent } from "../../../src/domain/Event.js"
import { postJson, type Spawned, spawnAggregator, waitFor, withClient } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase } from "../../support/database.js"
import { eventStoreTest } from "../../support/fakes.js"
import { keyOf, sseClient, until } from "../../support/live.js"

// Announcements and the live tail with the in-process broker (no REDIS_URL).

const ev = (key: number): NewEvent => ({ topic: "t", event_id: `k${key}`, timestamp: "2025-01-01T00:00:00Z", source: null, payload: null })

/**
 * A store that commits first-wins in memory, and fails the transactions `failWhen` picks after having
 * looked at them: the Batcher must announce what a committed transaction returned, each row once, and
 * nothing of a failed one.
 */
const carelessStore = (failWhen: (events: ReadonlyArray<NewEvent>) => boolean) => {
  const stored = new Set<string>()
  let seq = 0
  const layer = eventStoreTest(
    (events) =>
      Effect.gen(function*() {
        if (failWhen(events)) return yield* new StorageUnavailable({ message: "injected" })
        return events.map((e): StoredEvent | undefined => {
          const key = eventKey(e.topic, e.event_id)
          if (stored.has(key)) return undefined
          stored.add(key)
          return {
            seq: ++seq,
            topic: e.topic,
            event_id: e.event_id,
            timestamp: e.timestamp,
            source: e.source,
            payload: null,
            received_at: "2025-01-01T00:00:00.000000Z"
          }
        })
      }),
    Effect.sync(() => stored.size)
  )
  return { stored, layer }
}

const stored = (topic: string, i: number): StoredEvent => ({
  seq: i,
  topic,
  event_id: `e${i}`,
  timestamp: "2025-01-01T00:00:00Z",
  source: null,
  payload: null,
  received_at: "2025-01-01T00:00:00Z"
})

/** What a live-tail body hands its writer, chunk by chunk, from now on (the body is read as the server reads it). */
const reading = (tail: Tail) => {
  const chunks: Array<Buffer> = []
  tail.on("data", (chunk: Buffer) => chunks.push(chunk))
  return chunks
}

/** The events in Server-Sent Events text, in order. */
const eventsIn = (chunks: ReadonlyArray<Buffer>): Array<StoredEvent> =>
  Buffer.concat(chunks).toString().split("\n\n").flatMap((frame) =>
    frame.split("\n").filter((line) => line.startsWith("data: ")).map((line) => JSON.parse(line.slice(6)) as StoredEvent)
  )

const closed = (tail: Tail) => Effect.async<void>((resume) => void tail.once("close", () => resume(Effect.void)))

const configLayer = (env: Record<string, string>) =>
  AggregatorConfig.Default.pipe(Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

describe("announcing and fanning out (in-process broker)", () => {
  it.live.prop(
    "only events a committed transaction stored are announced, each once: never a duplicate or a rolled-back one",
    [
      fc.array(fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 40 }),
      fc.integer({ min: 0, max: 30 }),
      fc.integer({ min: 1, max: 8 }),
      fc.boolean()
    ],
    ([subs, poison, flushMaxEvents, groupCommit]) => {
      const store = carelessStore((events) => events.some((e) => e.event_id === `k${poison}`))
      return Effect.gen(function*() {
        const broker = yield* Broker
        const batcher = yield* Batcher
        const tail = reading(yield* broker.subscribe(undefined))
        const answers = yield* Effect.forEach(subs, (keys) => Effect.either(batcher.submit(keys.map(ev))), {
          concurrency: "unbounded"
        })
        const reportedNew: Array<string> = []
        answers.forEach((a, i) => {
          if (Either.isLeft(a)) return
          a.right.forEach((row, j) => {
            if (row !== undefined) reportedNew.push(eventKey("t", `k${subs[i][j]}`))
          })
        })
        // the poisoned key is in every failed flush and never stored
        expect(store.stored.has(eventKey("t", `k${poison}`))).toBe(false)
        while ((yield* broker.announcements).published < store.stored.size) yield* Effect.sleep("1 millis")
        // anything announced by mistake would sit in the queue among the expected ones
        yield* Effect.sleep("5 millis")
        const announced = eventsIn(tail).map(keyOf)
        // exactly what committed, each once (a submission split at the cap may have committed in part)
        expect(announced.sort()).toEqual([...store.stored].sort())
        expect(new Set(announced)).toEqual(new Set([...reportedNew, ...announced]))
        expect(yield* broker.announcements).toEqual({ published: store.stored.size, failed: 0 })
      }).pipe(
        Effect.scoped,
        Effect.provide(Batcher.DefaultWithoutDependencies.pipe(
          Layer.provideMerge(Broker.Default),
          Layer.provide(store.layer),
          Layer.provide(configLayer({ FLUSH_MAX_EVENTS: String(flushMaxEvents), GROUP_COMMIT: String(groupCommit) }))
        ))
      )
    },
    { fastCheck: { numRuns: 40 } }
  )

  it.live("a subscriber that falls too far behind is cut off (its stream ends); one that keeps up is not", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      // never read: what is announced waits for it
      const slow = yield* broker.subscribe(undefined)
      const other = reading(yield* broker.subscribe("other"))
      // 4 fit the slow one's buffer (STREAM_CLIENT_BUFFER_EVENTS=4); the 5th cuts it off
      yield* broker.announce(Array.from({ length: 4 }, (_, i) => stored("t", i)))
      while ((yield* broker.announcements).published < 4) yield* Effect.sleep("1 millis")
      yield* Effect.sleep("5 millis")
      expect(slow.destroyed).toBe(false)
      expect(yield* broker.streamClients).toBe(2)
      yield* broker.announce([stored("t", 4), stored("other", 5), stored("other", 6)])
      while ((yield* broker.streamClients) > 1) yield* Effect.sleep("1 millis")
      expect(slow.destroyed).toBe(true)
      while (eventsIn(other).length < 2) yield* Effect.sleep("1 millis")
      expect(eventsIn(other).map((e) => e.event_id)).toEqual(["e5", "e6"])
    }).pipe(
      Effect.scoped,
      Effect.provide(Broker.Default.pipe(Layer.provide(configLayer({ STREAM_CLIENT_BUFFER_EVENTS: "4" }))))
    ))

  it.live("each batch is encoded once for all clients of an audience, frame by frame as the stream sends it", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const everything = yield* Effect.all(Array.from({ length: 3 }, () => Effect.map(broker.subscribe(undefined), reading)))
      const onlyA = yield* Effect.all(Array.from({ length: 2 }, () => Effect.map(broker.subscribe("a"), reading)))
      const events = [stored("a", 1), stored("b", 2), stored("a", 3)]
      yield* broker.announce(events)
      // the subscription line, then the batch
      while ([...everything, ...onlyA].some((chunks) => chunks.length < 2)) yield* Effect.sleep("1 millis")
      const all = everything.map((chunks) => chunks[1])
      const a = onlyA.map((chunks) => chunks[1])
      // the very same bytes for every client of one audience: encoded once, not once a client
      expect(all.every((bytes) => bytes === all[0])).toBe(true)
      expect(a.every((bytes) => bytes === a[0])).toBe(true)
      expect(all[0].toString()).toBe(events.map(sseFrame).join(""))
      expect(a[0].toString()).toBe([events[0], events[2]].map(sseFrame).join(""))
      expect(everything[0][0].toString()).toBe(": subscribed\n\n")
    }).pipe(
      Effect.scoped,
      Effect.provide(Broker.Default.pipe(Layer.provide(configLayer({}))))
    ))

  it.live("a fan-out larger than a slice lets the event loop run between clients: ingestion is not held up by readers", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const clients = yield* Effect.all(Array.from({ length: 40 }, () => Effect.map(broker.subscribe(undefined), reading)))
      // each has its subscription line, so its writer waits for more
      while (clients.some((chunks) => chunks.length < 1)) yield* Effect.sleep("1 millis")
      // 40 clients × 200 KB is 8 MB: several slices of 2 MiB
      const big: StoredEvent = { ...stored("t", 1), payload: { blob: "x".repeat(200_000) } }
      const served: Array<number> = []
      let watching = true
      const watch = () => {
        served.push(clients.filter((chunks) => chunks.length >= 2).length)
        if (watching) setImmediate(watch)
      }
      setImmediate(watch)
      yield* broker.announce([big])
      while (clients.some((chunks) => chunks.length < 2)) yield* Effect.sleep("1 millis")
      watching = false
      // the event loop ran while some clients had the event and others did not yet
      expect(served.some((n) => n > 0 && n < clients.length)).toBe(true)
      expect(clients.every((chunks) => eventsIn(chunks).length === 1)).toBe(true)
    }).pipe(
      Effect.scoped,
      Effect.provide(Broker.Default.pipe(Layer.provide(configLayer({}))))
    ))

  it.live("past STREAM_MAX_CLIENTS a subscription fails with Overloaded; a freed slot is taken again", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const first = yield* broker.subscribe(undefined)
      yield* broker.subscribe("x")
      const refused = yield* Effect.flip(broker.subscribe(undefined))
      expect(refused).toBeInstanceOf(Overloaded)
      expect(yield* broker.streamClients).toBe(2)
      // the server destroys the body when its connection closes
      first.destroy()
      yield* closed(first)
      expect(yield* broker.streamClients).toBe(1)
      yield* broker.subscribe(undefined)
      expect(yield* broker.streamClients).toBe(2)
    }).pipe(
      Effect.scoped,
      Effect.provide(Broker.Default.pipe(Layer.provide(configLayer({ STREAM_MAX_CLIENTS: "2" }))))
    ))

  it.live("a full announcement buffer drops and counts what it drops: announcing never waits", () =>
    Effect.gen(function*() {
      const broker = yield* Broker
      const tail = reading(yield* broker.subscribe(undefined))
      // one synchronous step: the sender cannot take any out in between
      yield* broker.announce(Array.from({ length: 10 }, (_, i) => stored("t", i)))
      let counts = yield* broker.announcements
      while (counts.published + counts.failed < 10) {
        yield* Effect.sleep("1 millis")
        counts = yield* broker.announcements
      }
      expect(counts.published + counts.failed).toBe(10)
      expect(counts.failed).toBeGreaterThanOrEqual(7)
      yield* Effect.sleep("5 millis")
      expect(eventsIn(tail).length).toBe(counts.published)
    }).pipe(
      Effect.scoped,
      Effect.provide(Broker.Default.pipe(Layer.provide(configLayer({ ANNOUNCE_BUFFER_EVENTS: "2" }))))
    ))
})

// ---------------------------------------------------------------------------------------------

const event = (topic: string, event_id: string) => ({ topic, event_id, timestamp: "2025-06-01T00:00:00Z", payload: { n: event_id } })
const stats = (url: string) => withClient(url, (client) => client.health.stats())
const publish = (url: string, e: ReturnType<typeof event>) => withClient(url, (client) => client.events.publish({ payload: e }))

plainDescribe.skipIf(skipWithoutPostgres)(`live tail with the in-process broker${withoutPostgresNote}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  let agg: Spawned
  beforeAll(async () => {
    db = await freshDatabase("tail")
    agg = spawnAggregator({ DATABASE_URL: db.url, STREAM_HEARTBEAT_MS: "100", STREAM_MAX_CLIENTS: "2" })
    await waitFor(`${await agg.listening}/ready`)
  })
  afterAll(async () => {
    agg?.child.kill("SIGTERM")
    await agg?.exited
    await db?.drop()
  })

  plainIt("streams each newly stored event once, filtered by topic; duplicates never; heartbeats; unsubscribes", async () => {
    const all = sseClient(`${agg.url}/events/stream`)
    const orders = sseClient(`${agg.url}/events/stream?topic=orders`)
    await Promise.all([all.ready, orders.ready])
    plainExpect(all.status).toBe(200)
    plainExpect(all.contentType).toMatch(/^text\/event-stream/)
    plainExpect((await stats(agg.url)).stream_clients).toBe(2)

    plainExpect((await publish(agg.url, event("orders", "o1"))).status).toBe("processed")
    plainExpect((await publish(agg.url, event("orders", "o1"))).status).toBe("dropped_duplicate")
    plainExpect((await publish(agg.url, event("users", "u1"))).status).toBe("processed")
    const batch = await withClient(agg.url, (client) =>
      client.events.publishBatch({ payload: [event("orders", "o2"), event("orders", "o2"), event("orders", "o1"), { topic: "orders" }] }))
    plainExpect([batch.processed, batch.duplicates, batch.rejected]).toEqual([1, 2, 1])
    // announcements leave in order: once the last one is seen, a wrongly announced duplicate would have been too
    plainExpect((await publish(agg.url, event("orders", "last"))).status).toBe("processed")
    await until("the last event on both streams", () =>
      all.events.some((e) => e.event_id === "last") && orders.events.some((e) => e.event_id === "last"))

    plainExpect(all.events.map((e) => `${e.topic}/${e.event_id}`)).toEqual(["orders/o1", "users/u1", "orders/o2", "orders/last"])
    plainExpect(orders.events.map((e) => e.event_id)).toEqual(["o1", "o2", "last"])
    // each frame is the stored event, as GET /events/:topic/:event_id returns it
    const o1 = await withClient(agg.url, (client) => client.events.get({ path: { topic: "orders", event_id: "o1" } }))
    plainExpect(all.events[0]).toEqual(o1)
    plainExpect(all.ids).toEqual(all.events.map((e) => String(e.seq)))
    await until("a heartbeat", () => all.comments >= 2)

    const s = await stats(agg.url)
    plainExpect(s.announcements).toEqual({ published: 4, failed: 0 })
    plainExpect(s.cluster).toEqual({
      uptime_stats: s.uptime_stats,
      storage_failures: s.storage_failures,
      announcements: s.announcements,
      replicas: 1
    })

    all.close()
    orders.close()
    await until("clients unsubscribed", async () => (await stats(agg.url)).stream_clients === 0)
  })

  plainIt("past STREAM_MAX_CLIENTS (2 here) a client gets a 429 JSON with Retry-After; a freed slot serves again", async () => {
    const first = sseClient(`${agg.url}/events/stream`)
    const second = sseClient(`${agg.url}/events/stream?topic=x`)
    await Promise.all([first.ready, second.ready])
    const refused = await fetch(`${agg.url}/events/stream`)
    plainExpect(refused.status).toBe(429)
    plainExpect(refused.headers.get("retry-after")).toMatch(/^\d+$/)
    plainExpect(await refused.json()).toMatchObject({ error: "overloaded" })
    second.close()
    await until("one client left", async () => (await stats(agg.url)).stream_clients === 1)
    const third = sseClient(`${agg.url}/events/stream`)
    await third.ready
    plainExpect(third.status).toBe(200)
    first.close()
    third.close()
    await until("clients unsubscribed", async () => (await stats(agg.url)).stream_clients === 0)
  })

  plainIt("refuses an invalid topic filter with 422", async () => {
    const res = await fetch(`${agg.url}/events/stream?topic=`)
    plainExpect(res.status).toBe(422)
    plainExpect(await res.json()).toMatchObject({ error: "validation_failed" })
  })

  plainIt("documents the stream in the OpenAPI document", async () => {
    const spec = await fetch(`${agg.url}/openapi.json`).then((r) => r.json() as Promise<any>)
    plainExpect(Object.keys(spec.paths["/events/stream"].get.responses["200"].content)).toEqual(["text/event-stream"])
  })
})

plainDescribe.skipIf(skipWithoutPostgres)(`shutdown with live-tail clients connected${withoutPostgresNote}`, () => {
  plainIt("SIGTERM ends every stream and the process exits cleanly without waiting for the shutdown timeout", async () => {
    const db = await freshDatabase("tailstop")
    // were the streams left open, draining would wait the full 10 minutes and this test would time out
    const agg = spawnAggregator({ DATABASE_URL: db.url, SHUTDOWN_TIMEOUT_MS: "600000" })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const clients = [sseClient(`${agg.url}/events/stream`), sseClient(`${agg.url}/events/stream?topic=x`)]
      await Promise.all(clients.map((c) => c.ready))
      agg.child.kill("SIGTERM")
      plainExpect(await agg.exited).toBe(0)
      await Promise.all(clients.map((c) => c.ended))
      plainExpect(agg.output()).toContain("drained")
      plainExpect(agg.output()).not.toContain("shutdown timeout")
    } finally {
      agg.child.kill("SIGKILL")
      await db.drop()
    }
  })
})

/**
 * A raw HTTP/1.1 client that subscribes to `path` and then stops reading, though it keeps the TCP
 * connection open: what a hung or overwhelmed consumer looks like to the server.
 */
const stalledClient = (url: string, path: string) =>
  new Promise<{ readonly resume: () => Promise<string>; readonly closed: () => boolean }>((resolve, reject) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect(Number(port), hostname)
    let text = ""
    let closed = false
    const ended = new Promise<void>((done) => socket.on("close", () => {
      closed = true
      done()
    }))
    socket.setEncoding("utf8")
    socket.on("error", () => {})
    socket.on("connect", () => socket.write(`GET ${path} HTTP/1.1\r\nhost: ${hostname}:${port}\r\n\r\n`))
    const onData = (chunk: string) => {
      text += chunk
      if (!text.includes(": subscribed")) return
      socket.off("data", onData)
      socket.pause()
      resolve({
        closed: () => closed,
        // reads what the kernel still holds, until the server's end of the connection is gone
        resume: async () => {
          socket.on("data", (more: string) => (text += more))
          socket.resume()
          await ended
          return text
        }
      })
    }
    socket.on("data", onData)
    ended.then(() => reject(new Error(`${path} closed before subscribing: ${text}`)))
  })

plainDescribe.skipIf(skipWithoutPostgres)(`a live-tail client that stops reading${withoutPostgresNote}`, () => {
  plainIt("is disconnected and unsubscribed once it falls behind, while other clients keep streaming", async () => {
    const db = await freshDatabase("stall")
    const agg = spawnAggregator({ DATABASE_URL: db.url, STREAM_CLIENT_BUFFER_EVENTS: "16" })
    try {
      await waitFor(`${await agg.listening}/ready`)
      const stalled = await stalledClient(agg.url, "/events/stream")
      const healthy = sseClient(`${agg.url}/events/stream?topic=small`)
      await healthy.ready
      plainExpect((await stats(agg.url)).stream_clients).toBe(2)

      // Large events fill the socket buffers, then the writer waits for a drain that never comes, then
      // the client's own buffer overflows. The kernel's socket buffers take a few MB (about 5 on a
      // default Linux); a server that kept the stalled client would be sent events up to the limit.
      const blob = "x".repeat(60_000)
      const limit = 32 * 1024 * 1024
      let sent = 0
      while ((await stats(agg.url)).stream_clients > 1) {
        if (sent * blob.length > limit) throw new Error(`the stalled client is still connected after ${sent} large events`)
        const batch = Array.from({ length: 10 }, (_, i) => event("big", `b${sent + i}`)).map((e) => ({ ...e, payload: { blob } }))
        const res = await postJson(`${agg.url}/publish/batch`, batch)
        plainExpect(res.status).toBe(200)
        plainExpect((await res.json() as any).processed).toBe(10)
        sent += 10
      }

      // the server cut the connection: what the kernel held reaches the client, then the end
      const received = await stalled.resume()
      plainExpect(stalled.closed()).toBe(true)
      plainExpect(received.split("\ndata: ").length - 1).toBeLessThan(sent)

      plainExpect((await postJson(`${agg.url}/publish`, event("small", "after"))).status).toBe(201)
      await until("the healthy client to see the event", () => healthy.events.some((e) => e.event_id === "after"))
      plainExpect((await stats(agg.url)).stream_clients).toBe(1)
      healthy.close()
      await until("no client left", async () => (await stats(agg.url)).stream_clients === 0)
    } finally {
      agg.child.kill("SIGTERM")
      await agg.exited
      await db.drop()
    }
  })
})

describe("inSends", () => {
  it.prop("regroups commits into sends of at most max events, keeping every event once, in order", [
    fc.array(fc.array(fc.nat(), { maxLength: 30 }), { maxLength: 12 }),
    fc.integer({ min: 1, max: 40 })
  ], ([batches, max]) => {
    const sends = inSends(batches, max)
    expect(sends.flat()).toEqual(batches.flat())
    for (const s of sends) expect(s.length).toBeGreaterThan(0)
    for (const s of sends) expect(s.length).toBeLessThanOrEqual(max)
    // as few sends as the size allows
    expect(sends.length).toBe(Math.ceil(batches.flat().length / max))
  })
})
