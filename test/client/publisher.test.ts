import { describe, expect, layer } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Either, Exit, Fiber, Layer, Scope } from "effect"
import * as fc from "effect/FastCheck"
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { afterAll } from "vitest"
import { type Delivered, outcomeAt, Publisher, type PublisherOptions, SettledStatus } from "../../src/client/Publisher.js"
import type { EventInput } from "../../src/domain/Event.js"
import { aggregatorLayer, promise, TestAggregator, unique, waitFor } from "../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { query } from "../support/database.js"

type Fault = "pass" | "503" | "429" | "reset before" | "reset after" | "hang after"

/** A deterministic stream of numbers in [0, 1) from a seed (mulberry32). */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

interface Seen {
  readonly at: number
  readonly body: string
  readonly fault: Fault
}

/**
 * A proxy in front of a real aggregator that misbehaves on purpose: per request, `fault` says whether to
 * pass it on, refuse it (503 or 429 with `Retry-After`), drop the connection before passing it on, or pass it
 * on and then drop the connection or never answer (the write committed, the answer lost).
 */
const startProxy = async (target: string, fault: (req: IncomingMessage) => Fault, retryAfter = "0") => {
  const seen: Array<Seen> = []
  const hung: Array<ServerResponse> = []
  const server: Server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (d) => chunks.push(d))
    req.on("end", () => {
      const body = Buffer.concat(chunks)
      const f = req.method === "POST" ? fault(req) : "pass"
      seen.push({ at: Date.now(), body: body.toString(), fault: f })
      if (f === "reset before") return req.socket.destroy()
      if (f === "503" || f === "429") {
        res.writeHead(Number(f), { "content-type": "application/json", "retry-after": retryAfter })
        return res.end(JSON.stringify(
          f === "503"
            ? { _tag: "StorageUnavailable", error: "storage_unavailable", message: "retry later" }
            : { _tag: "Overloaded", error: "overloaded", message: "retry later" }
        ))
      }
      const upstream = request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        const parts: Array<Buffer> = []
        answer.on("data", (d) => parts.push(d))
        answer.on("end", () => {
          if (f === "reset after") return req.socket.destroy()
          if (f === "hang after") return void hung.push(res)
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          res.end(Buffer.concat(parts))
        })
      })
      upstream.on("error", () => req.socket.destroy())
      upstream.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of hung) res.destroy()
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}

const proxies: Array<{ close: () => Promise<void> }> = []
afterAll(async () => {
  for (const p of proxies) await p.close()
})
const proxy = (target: string, fault: (req: IncomingMessage) => Fault, retryAfter?: string) =>
  promise(async () => {
    const p = await startProxy(target, fault, retryAfter)
    proxies.push(p)
    return p
  })

const quickRetries: Partial<PublisherOptions> = {
  backoff: { baseMs: 5, maxDelayMs: 40, maxRetryAfterMs: 2_000 },
  maxRetries: 40,
  timeout: "400 millis"
}

/** Runs `f` with a Publisher for `options`, closed (flushing) when `f` ends. */
const withPublisher = <A, E>(options: PublisherOptions, f: (p: Publisher) => Effect.Effect<A, E>) =>
  Effect.flatMap(Publisher, f).pipe(Effect.provide(Publisher.Default(options)))

const counters = (url: string) =>
  promise(async () => (await (await fetch(`${url}/stats`)).json() as any).uptime_stats as Record<string, number>)

const server = Effect.tap(TestAggregator, ({ url }) => promise(() => waitFor(`${url}/ready`)))

const ev = (topic: string, id: string, n: number): EventInput => ({
  topic,
  event_id: id,
  timestamp: "2025-03-04T05:06:07.123456Z",
  payload: { n }
})

describe.skipIf(skipWithoutPostgres)(`the client library's Publisher${withoutPostgresNote}`, () => {
  layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("against a real aggregator", (it) => {
    it.effect.prop(
      "through a proxy that drops connections, refuses with 503/429 and loses answers: each event stored exactly once",
      [
        fc.array(fc.record({ key: fc.integer({ min: 0, max: 30 }), n: fc.integer() }), { minLength: 1, maxLength: 80 }),
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.integer({ min: 1, max: 25 }),
        fc.integer({ min: 1, max: 4 }),
        fc.constantFrom("publish", "publishAll", "publishEach")
      ],
      ([sends, seed, batchSize, concurrency, how]) =>
        Effect.gen(function*() {
          const { databaseUrl, url } = yield* server
          const next = random(seed)
          const faults: Array<Fault> = ["503", "429", "reset before", "reset after", "hang after"]
          const flaky = yield* proxy(url, () => next() < 0.45 ? faults[Math.floor(next() * faults.length)] : "pass")
          const topic = unique("flaky")
          // a key's events are exact copies, as a producer re-sending its event would make them
          const first = new Map<number, number>()
          for (const s of sends) if (!first.has(s.key)) first.set(s.key, s.n)
          const events = sends.map((s) => ev(topic, `k${s.key}`, first.get(s.key)!))
          const before = yield* counters(url)

          const options: PublisherOptions = { url: flaky.url, batchSize, concurrency, linger: "2 millis", ...quickRetries }
          const outcomes = yield* withPublisher(options, (publisher) =>
            how === "publish"
              ? Effect.forEach(events, (e) => Effect.either(publisher.publish(e)), { concurrency: "unbounded" })
              : how === "publishAll"
              ? publisher.publishAll(events)
              : Effect.map(publisher.publishEach(events.length, (i) => ({ ...events[i] })), (settled) => {
                // the compact form says the same as the outcomes, and holds an error only for an event not stored
                expect(settled.errors.size).toBe(0)
                return events.map((_, i) => outcomeAt(settled, i))
              }))

          // every publish completed as stored: nothing lost
          for (const o of outcomes) expect(Either.isRight(o), JSON.stringify(o)).toBe(true)
          const delivered = outcomes.map((o) => (o as Either.Right<never, Delivered>).right)
          const rows = yield* promise(() =>
            query<{ event_id: string; payload: unknown; n: number }>(
              databaseUrl,
              "SELECT event_id, payload, count(*) OVER (PARTITION BY event_id)::int AS n FROM events WHERE topic = $1",
              [topic]
            )
          )
          expect(rows.map((r) => r.event_id).sort()).toEqual([...first.keys()].map((k) => `k${k}`).sort())
          for (const r of rows) expect(r).toEqual({ event_id: r.event_id, n: 1, payload: { n: first.get(Number(r.event_id.slice(1))) } })
          // nothing doubled: the server stored each key once, whatever the attempts that reached it
          const after = yield* counters(url)
          expect(after.unique_processed - before.unique_processed).toBe(first.size)
          // a key answered "processed" at most once; never more "processed" than keys
          expect(delivered.filter((d) => d.status === "processed").length).toBeLessThanOrEqual(first.size)
          // every retry resent the same events: the proxy saw no event outside the sent set
          const sentIds = new Set(events.map((e) => e.event_id))
          for (const s of flaky.seen) {
            for (const e of JSON.parse(s.body).events) expect(sentIds.has(e.event_id)).toBe(true)
          }
        }),
      { timeout: 120_000, fastCheck: { numRuns: 20 } }
    )

    it.effect("an item the server rejects fails only its own publish, with the server's issues", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* server
        const topic = unique("mixed")
        const bad = { topic, event_id: "bad", timestamp: "not a time" } as EventInput
        const [ok, rejected, dup] = yield* withPublisher({ url, batchSize: 10, linger: "50 millis" }, (publisher) =>
          Effect.all([
            Effect.either(publisher.publish(ev(topic, "a", 1))),
            Effect.either(publisher.publish(bad)),
            Effect.either(publisher.publish(ev(topic, "a", 1)))
          ], { concurrency: "unbounded" }))
        expect(Either.isRight(ok) && Either.isRight(dup)).toBe(true)
        const statuses = [ok, dup].map((o) => Either.getOrThrow(o).status).sort()
        expect(statuses).toEqual(["dropped_duplicate", "processed"])
        expect(Either.isLeft(rejected)).toBe(true)
        const error = Either.flip(rejected).pipe(Either.getOrThrow)
        expect(error._tag).toBe("EventRejected")
        expect(error).toMatchObject({ topic, event_id: "bad", issues: [{ path: "timestamp" }] })
        const rows = yield* promise(() => query(databaseUrl, "SELECT event_id FROM events WHERE topic = $1", [topic]))
        expect(rows).toEqual([{ event_id: "a" }])
      }))

    it.effect("a 503 with Retry-After: the same batch again, no sooner than asked", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        let posts = 0
        const refusing = yield* proxy(url, () => (++posts === 1 ? "503" : "pass"), "1")
        const topic = unique("later")
        const events = [ev(topic, "x", 1), ev(topic, "y", 2)]
        const outcomes = yield* withPublisher({ url: refusing.url, linger: "20 millis" }, (p) => p.publishAll(events))
        expect(outcomes.map((o) => Either.getOrThrow(o))).toEqual([
          { status: "processed", attempts: 2 },
          { status: "processed", attempts: 2 }
        ])
        const posted = refusing.seen.filter((s) => s.body !== "")
        expect(posted.map((s) => s.fault)).toEqual(["503", "pass"])
        expect(posted[1].body).toBe(posted[0].body)
        expect(posted[1].at - posted[0].at).toBeGreaterThanOrEqual(950)
      }))

    it.effect("a yield every few steps: concurrent requests' answers still settle their own events", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        const topic = unique("interleaved")
        const events = Array.from({ length: 60 }, (_, i) => ev(topic, `i${i}`, i))
        // every fiber, the publisher's senders too, gives way every 16 steps, so requests interleave much more than usual
        const outcomes = yield* withPublisher({ url, batchSize: 5, concurrency: 4, linger: "1 millis" }, (p) => p.publishAll(events)).pipe(
          Effect.withMaxOpsBeforeYield(16)
        )
        expect(outcomes.map((o) => Either.getOrThrow(o).status)).toEqual(events.map(() => "processed"))
      }))

    it.effect("a server that always answers 503: the batch is tried maxRetries + 1 times, then each of its events fails", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        const refusing = yield* proxy(url, () => "503")
        const topic = unique("refused")
        const reports: Array<{ attempt: number; retrying: boolean }> = []
        const outcomes = yield* withPublisher({
          url: refusing.url,
          linger: "20 millis",
          maxRetries: 3,
          backoff: { baseMs: 1, maxDelayMs: 5, maxRetryAfterMs: 5 },
          onAttempt: (r) => reports.push({ attempt: r.attempt, retrying: r.retrying })
        }, (p) => p.publishAll([ev(topic, "r1", 1), ev(topic, "r2", 2)]))
        expect(reports).toEqual([
          { attempt: 1, retrying: true },
          { attempt: 2, retrying: true },
          { attempt: 3, retrying: true },
          { attempt: 4, retrying: false }
        ])
        expect(refusing.seen.filter((s) => s.body !== "").length).toBe(4)
        for (const o of outcomes) {
          expect(Either.flip(o).pipe(Either.getOrThrow)).toMatchObject({ _tag: "DeliveryFailed", message: "HTTP 503", attempts: 4 })
        }
      }))

    it.effect("publishEach: each event made again for a retry, none held in between; the answer checked against each", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        let posts = 0
        const refusing = yield* proxy(url, () => (++posts === 1 ? "503" : "pass"))
        const topic = unique("each")
        const made = new Array<number>(3).fill(0)
        const settled = yield* withPublisher({ url: refusing.url, linger: "20 millis" }, (p) =>
          p.publishEach(3, (i) => {
            made[i]++
            return ev(topic, `e${i}`, i)
          }))
        expect(made).toEqual([2, 2, 2])
        expect([...settled.statuses]).toEqual([SettledStatus.processed, SettledStatus.processed, SettledStatus.processed])
        expect([...settled.attempts]).toEqual([2, 2, 2])
        const posted = refusing.seen.filter((s) => s.body !== "")
        expect(posted[1].body).toBe(posted[0].body)
      }))

    it.effect("an answer that names another event at an index fails that event only, as not accounted for", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        const lying = yield* promise(() =>
          startRewriter(url, (answer) => ({
            ...answer,
            results: answer.results.map((r: any) => r.index === 1 ? { ...r, event_id: `${r.event_id}x` } : r)
          }))
        )
        proxies.push(lying)
        const topic = unique("lying")
        const events = [0, 1, 2].map((i) => ev(topic, `l${i}`, i))
        const outcomes = yield* withPublisher({ url: lying.url, linger: "20 millis" }, (p) => p.publishAll(events))
        expect(Either.isRight(outcomes[0]) && Either.isRight(outcomes[2])).toBe(true)
        expect(Either.flip(outcomes[1]).pipe(Either.getOrThrow)).toMatchObject({
          _tag: "DeliveryFailed",
          topic,
          event_id: "l1",
          message: "the answer did not account for the event"
        })
      }))

    it.effect("backpressure: with the buffer full, publish waits until the server has taken events", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        let open = false
        const slow = yield* promise(() => startGate(url, () => open))
        proxies.push(slow)
        const topic = unique("full")
        yield* withPublisher({ url: slow.url, bufferSize: 4, batchSize: 2, concurrency: 1, linger: "1 millis" }, (publisher) =>
          Effect.gen(function*() {
            const firstFour = yield* Effect.fork(publisher.publishAll([1, 2, 3, 4].map((i) => ev(topic, `e${i}`, i))))
            yield* Effect.sleep("200 millis")
            const fifth = yield* Effect.fork(publisher.publish(ev(topic, "e5", 5)))
            yield* Effect.sleep("300 millis")
            // four events fill the buffer: the fifth is not even accepted yet, and nothing is answered
            expect(fifth.unsafePoll()).toBeNull()
            expect(firstFour.unsafePoll()).toBeNull()
            open = true
            const four = yield* Fiber.join(firstFour)
            expect(four.every(Either.isRight)).toBe(true)
            expect((yield* Fiber.join(fifth)).status).toBe("processed")
          }))
      }))

    it.effect("fromConfig: AGGREGATOR_URL and the PUBLISH_* settings; a bad one is a config error naming it", () =>
      Effect.gen(function*() {
        const { url } = yield* server
        const topic = unique("config")
        const fromEnv = (env: Record<string, string>) =>
          Layer.provide(Publisher.fromConfig, Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
        const stored = yield* Effect.flatMap(Publisher, (p) => p.publish(ev(topic, "c1", 1))).pipe(
          Effect.provide(fromEnv({ AGGREGATOR_URL: url, PUBLISH_BATCH_SIZE: "10", PUBLISH_LINGER_MS: "0" }))
        )
        expect(stored).toEqual({ status: "processed", attempts: 1 })
        const bad = yield* Effect.flip(Effect.provide(Publisher, fromEnv({ AGGREGATOR_URL: url, PUBLISH_BATCH_SIZE: "0" })))
        expect(String(bad)).toContain("PUBLISH_BATCH_SIZE must be a positive integer")
      }))

    it.effect("closing the scope sends what is buffered, without waiting out the linger", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* server
        const topic = unique("flush")
        const scope = yield* Scope.make()
        const built = yield* Layer.buildWithScope(Publisher.Default({ url, batchSize: 1000, linger: "1 minute" }), scope)
        const publisher = Context.get(built, Publisher)
        const pending = yield* Effect.fork(publisher.publishAll([1, 2, 3].map((i) => ev(topic, `f${i}`, i))))
        yield* Effect.sleep("100 millis")
        expect(pending.unsafePoll()).toBeNull()
        const started = Date.now()
        yield* Scope.close(scope, Exit.void)
        expect(Date.now() - started).toBeLessThan(10_000)
        const outcomes = yield* Fiber.join(pending)
        expect(outcomes.map((o) => Either.getOrThrow(o).status)).toEqual(["processed", "processed", "processed"])
        const rows = yield* promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]))
        expect(rows[0].n).toBe(3)
        // closed: no more events are taken
        const late = yield* Effect.either(publisher.publish(ev(topic, "late", 4)))
        expect(Either.flip(late).pipe(Either.getOrThrow)).toMatchObject({ _tag: "DeliveryFailed", message: "the publisher is closed" })
      }))
  })
})

/** Holds each request until `isOpen()`, then passes it on. */
const startGate = async (target: string, isOpen: () => boolean) => {
  const server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (d) => chunks.push(d))
    req.on("end", () => {
      const go = () => {
        if (!isOpen()) return void setTimeout(go, 10)
        const upstream = request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(res)
        })
        upstream.end(Buffer.concat(chunks))
      }
      go()
    })
  })
  return listening(server)
}

/** Passes each request on and rewrites each JSON answer to a batch with `rewrite`. */
const startRewriter = async (target: string, rewrite: (answer: any) => unknown) => {
  const server = createServer((req, res) => {
    const chunks: Array<Buffer> = []
    req.on("data", (d) => chunks.push(d))
    req.on("end", () => {
      const upstream = request(`${target}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
        const parts: Array<Buffer> = []
        answer.on("data", (d) => parts.push(d))
        answer.on("end", () => {
          const text = Buffer.concat(parts).toString()
          const body = req.url === "/publish/batch" && answer.statusCode === 200 ? JSON.stringify(rewrite(JSON.parse(text))) : text
          res.writeHead(answer.statusCode ?? 502, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
          res.end(body)
        })
      })
      upstream.end(Buffer.concat(chunks))
    })
  })
  return listening(server)
}

/** Listens on a free loopback port; `close` ends every connection too. */
const listening = async (server: Server) => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      })
  }
}
