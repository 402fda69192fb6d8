import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as net from "node:net"
import { afterAll } from "vitest"
import { countBatchAnswer, readBatchAnswer, readPublishAnswer } from "../../src/publisher/SendLoop.js"
import { LatencyRecorder, percentile } from "../../src/publisher/Latency.js"
import { histogramOf } from "../support/latency.js"
import { Tally } from "../../src/publisher/Tally.js"
import { type Answer, Connection, RequestBuffer, targetOf, type WireFailure } from "../../src/client/Wire.js"
import { Workload } from "../../src/publisher/Workload.js"
import { generateWorkload } from "../support/workload.js"

const servers: Array<net.Server> = []
afterAll(async () => {
  for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()))
})

interface Received {
  readonly head: string
  readonly body: string
}

/**
 * A TCP server speaking just enough HTTP/1.1 to read requests with a Content-Length, answering each with
 * what `answer` returns: a list of byte pieces, written with a pause between them so they arrive apart.
 * `null` answers nothing; "close" closes the connection instead; an empty last piece closes it after the answer.
 */
const rawServer = async (answer: (request: Received, index: number) => ReadonlyArray<Buffer> | null | "close") => {
  const requests: Array<Received> = []
  let connections = 0
  const server = net.createServer((socket) => {
    connections++
    let buf = Buffer.alloc(0)
    socket.on("error", () => {})
    socket.on("data", async (chunk) => {
      buf = Buffer.concat([buf, chunk])
      for (;;) {
        const end = buf.indexOf("\r\n\r\n")
        if (end === -1) return
        const head = buf.toString("latin1", 0, end)
        const length = Number(/content-length: (\d+)/i.exec(head)?.[1] ?? 0)
        if (buf.length < end + 4 + length) return
        const request = { head, body: buf.toString("utf8", end + 4, end + 4 + length) }
        buf = buf.subarray(end + 4 + length)
        requests.push(request)
        const reply = answer(request, requests.length - 1)
        if (reply === "close") {
          socket.destroy()
          return
        }
        if (reply === null) return
        for (const piece of reply) {
          if (piece.length === 0) socket.end()
          else socket.write(piece)
          await new Promise((resolve) => setTimeout(resolve, 1))
        }
      }
    })
  })
  servers.push(server)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as net.AddressInfo).port
  return { url: `http://127.0.0.1:${port}`, requests, connections: () => connections }
}

const call = (connection: Connection, bytes: Uint8Array, timeoutMs = 5_000) =>
  new Promise<{ failure: WireFailure | undefined; answer: Answer | undefined }>((resolve) =>
    connection.request(bytes, timeoutMs, (failure, answer) => resolve({ failure, answer }))
  )

const post = (url: string, path: string, body: string, apiKey?: string) => {
  const request = new RequestBuffer(targetOf(url, apiKey), path, 16)
  request.begin()
  for (const piece of body.match(/.{1,7}/gs) ?? []) request.append(piece)
  return request.finish()
}

/** Splits `bytes` at the given fractions into consecutive pieces. */
const split = (bytes: Buffer, cuts: ReadonlyArray<number>): Array<Buffer> => {
  const at = [...new Set(cuts.map((c) => Math.floor(c * bytes.length)))].sort((a, b) => a - b)
  const pieces: Array<Buffer> = []
  let from = 0
  for (const cut of [...at, bytes.length]) {
    if (cut > from) pieces.push(bytes.subarray(from, cut))
    from = Math.max(from, cut)
  }
  return pieces
}

const encodeAnswer = (status: number, body: string, chunked: boolean, retryAfter: string | undefined, interim: boolean) => {
  const bytes = Buffer.from(body)
  const headers = [`HTTP/1.1 ${status} Whatever`, "Content-Type: application/json", "X-Padding: x"]
  if (retryAfter !== undefined) headers.push(`rEtRy-AfTeR: ${retryAfter}`)
  let payload: Buffer
  if (chunked) {
    headers.push("Transfer-Encoding: chunked")
    const pieces = split(bytes, [0.3, 0.6]).map((p) => Buffer.concat([Buffer.from(`${p.length.toString(16)}\r\n`), p, Buffer.from("\r\n")]))
    payload = Buffer.concat([...pieces, Buffer.from("0\r\n\r\n")])
  } else {
    headers.push(`Content-Length: ${bytes.length}`)
    payload = bytes
  }
  const head = Buffer.from(`${interim ? "HTTP/1.1 100 Continue\r\n\r\n" : ""}${headers.join("\r\n")}\r\n\r\n`)
  return Buffer.concat([head, payload])
}

describe("hand-written HTTP/1.1 connection", () => {
  it("any answer, cut anywhere, Content-Length or chunked, after a 100 Continue or not: read whole, status, Retry-After and body", async () => {
    const answer = fc.record({
      status: fc.constantFrom(200, 201, 400, 422, 429, 500, 503),
      body: fc.string({ unit: "binary", maxLength: 3000 }),
      chunked: fc.boolean(),
      retryAfter: fc.option(fc.constantFrom("1", "120", "Wed, 21 Oct 2015 07:28:00 GMT"), { nil: undefined }),
      interim: fc.boolean(),
      cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 })
    })
    let current: Buffer[] = []
    const server = await rawServer(() => current)
    const connection = new Connection(targetOf(server.url, undefined))
    await fc.assert(
      fc.asyncProperty(answer, async (a) => {
        current = split(encodeAnswer(a.status, a.body, a.chunked, a.retryAfter, a.interim), a.cuts)
        const sent = `{"n":${a.body.length}}`
        const { failure, answer: got } = await call(connection, post(server.url, "/publish", sent))
        expect(failure).toBeUndefined()
        expect(got).toMatchObject({ status: a.status, retryAfter: a.retryAfter, body: a.body })
        expect(got!.headerLines.split("\r\n")).toEqual(encodeAnswer(a.status, a.body, a.chunked, a.retryAfter, false)
          .toString("latin1").split("\r\n\r\n")[0].split("\r\n").slice(1))
        expect(server.requests.at(-1)!.body).toBe(sent)
      }),
      { numRuns: 60 }
    )
    // every answer was read to its end, so one connection carried all of them
    expect(server.connections()).toBe(1)
    connection.close()
  })

  it("the request: method, path under the base URL, Host, the API key, Content-Length of the UTF-8 body", async () => {
    const server = await rawServer(() => [encodeAnswer(201, "{}", false, undefined, false)])
    const connection = new Connection(targetOf(`${server.url}/base/`, "k-1"))
    const body = `{"payload":"é ✓ 🚀","long":"${"x".repeat(40_000)}"}`
    const { failure } = await call(connection, post(`${server.url}/base/`, "/publish/batch", body, "k-1"))
    expect(failure).toBeUndefined()
    const [request] = server.requests
    expect(request.head.split("\r\n")[0]).toBe("POST /base/publish/batch HTTP/1.1")
    expect(request.head).toContain(`Host: ${new URL(server.url).host}`)
    expect(request.head).toContain("Authorization: Bearer k-1")
    expect(request.head).toContain(`Content-Length: ${Buffer.byteLength(body)}`)
    expect(request.body).toBe(body)
    connection.close()
  })

  it("no answer within the timeout: Timeout, and the next request goes out on a new connection", async () => {
    const server = await rawServer((_, index) => (index === 0 ? null : [encodeAnswer(200, "ok", false, undefined, false)]))
    const connection = new Connection(targetOf(server.url, undefined))
    const first = await call(connection, post(server.url, "/publish", "{}"), 200)
    expect(first.failure).toEqual({ _tag: "Timeout" })
    const second = await call(connection, post(server.url, "/publish", "{}"), 2_000)
    expect(second.answer?.status).toBe(200)
    expect(server.connections()).toBe(2)
    connection.close()
  })

  it("the server closes the connection without answering, or nothing listens: a transport failure", async () => {
    const server = await rawServer(() => "close")
    const connection = new Connection(targetOf(server.url, undefined))
    const closed = await call(connection, post(server.url, "/publish", "{}"))
    expect(closed.failure?._tag).toBe("Transport")
    connection.close()

    const free = net.createServer()
    await new Promise<void>((resolve) => free.listen(0, "127.0.0.1", resolve))
    const port = (free.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => free.close(() => resolve()))
    const nowhere = new Connection(targetOf(`http://127.0.0.1:${port}`, undefined))
    const refused = await call(nowhere, post(`http://127.0.0.1:${port}`, "/publish", "{}"))
    expect(refused.failure).toEqual({ _tag: "Transport", message: "ECONNREFUSED" })
    nowhere.close()
  })

  it("an answer that is not HTTP; a body without a length, read until the server closes the connection", async () => {
    const server = await rawServer((_, index) =>
      index === 0
        ? [Buffer.from("garbage\r\n\r\n")]
        : [Buffer.from("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil "), Buffer.from("the end"), Buffer.alloc(0)]
    )
    const connection = new Connection(targetOf(server.url, undefined))
    const bad = await call(connection, post(server.url, "/publish", "{}"))
    expect(bad.failure).toEqual({ _tag: "Invalid", message: "the answer is not HTTP/1.1" })
    const untilClose = await call(connection, post(server.url, "/publish", "{}"))
    expect(untilClose).toMatchObject({ failure: undefined, answer: { status: 200, retryAfter: undefined, body: "until the end" } })
    connection.close()
  })
})

describe("reading answers as the API defines them", () => {
  const answer = (status: number, body: unknown, retryAfter?: string): Answer => ({
    status,
    retryAfter,
    headerLines: "",
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

  it("POST /publish: 201 processed, 200 dropped_duplicate; anything else is a status or unreadable", () => {
    expect(readPublishAnswer(answer(201, { status: "processed", id: "a", topic: "t" }))).toBe("processed")
    expect(readPublishAnswer(answer(200, { status: "dropped_duplicate", id: "a", topic: "t" }))).toBe("dropped_duplicate")
    expect(readPublishAnswer(answer(201, { status: "dropped_duplicate", id: "a", topic: "t" }))).toEqual({
      _tag: "Invalid",
      message: "answer did not match the API"
    })
    expect(readPublishAnswer(answer(201, { status: "processed", id: 1, topic: "t" }))).toMatchObject({ _tag: "Invalid" })
    expect(readPublishAnswer(answer(201, "not json"))).toMatchObject({ _tag: "Invalid" })
    expect(readPublishAnswer(answer(202, { status: "processed", id: "a", topic: "t" }))).toEqual({
      _tag: "Invalid",
      message: "unreadable 202 answer"
    })
    expect(readPublishAnswer(answer(503, "<html>", "2"))).toEqual({ _tag: "Status", status: 503, retryAfter: "2" })
    expect(readPublishAnswer(answer(422, { error: "validation_failed" }))).toEqual({ _tag: "Status", status: 422, retryAfter: undefined })
  })

  it("POST /publish/batch: a BatchResult, item by item; an item the answer does not account for is failed", () => {
    const good = {
      received: 3,
      processed: 1,
      duplicates: 1,
      rejected: 1,
      results: [
        { index: 2, topic: "t2", event_id: "e-12", status: "rejected", errors: [{ path: "payload", message: "too big" }] },
        { index: 0, topic: "t0", event_id: "e-10", status: "processed" },
        { index: 1, topic: "t1", event_id: "e-11", status: "dropped_duplicate" }
      ]
    }
    const results = readBatchAnswer(answer(200, good))
    expect(Array.isArray(results)).toBe(true)
    const tally = new Tally(4, 14)
    countBatchAnswer(tally, [10, 11, 12, 13], (i) => `t${i}`, (key) => `e-${key}`, results as any)
    expect(tally.counts()).toMatchObject({ processed: 1, duplicates: 1, rejected: 1, failed: 1, unanswered_sends: 1 })
    expect(tally.failureReasons()).toEqual({
      "rejected: batch item: too big": 1,
      "failed: batch answer did not account for the event": 1
    })
    // an item naming another event is not an answer for this one
    const other = new Tally(1, 1)
    countBatchAnswer(other, [0], () => "t0", () => "e-0", [{ index: 0, topic: "t0", event_id: "e-9", status: "processed" }])
    expect(other.counts()).toMatchObject({ processed: 0, failed: 1 })

    for (const broken of [{ ...good, results: "no" }, { ...good, received: "3" }, { ...good, results: [{ index: 0, status: "maybe" }] }]) {
      expect(readBatchAnswer(answer(200, broken))).toEqual({ _tag: "Invalid", message: "answer did not match the API" })
    }
    expect(readBatchAnswer(answer(413, { error: "too large" }))).toEqual({ _tag: "Status", status: 413, retryAfter: undefined })
  })
})

describe("workload as a cursor, events rebuilt from the seed", () => {
  const options = fc.record({
    seed: fc.integer({ min: 0, max: 2 ** 47 }),
    events: fc.integer({ min: 1, max: 2000 }),
    duplicates: fc.double({ min: 0, max: 0.99, noNaN: true }),
    topics: fc.integer({ min: 1, max: 20 })
  })

  it.prop("the encoded body of a key is JSON.stringify of its event, in any order and any number of times", [options], ([o]) => {
    const workload = new Workload(o)
    const keys = [...Array(Math.min(50, workload.distinctKeys)).keys()].reverse()
    for (const key of keys) {
      const event = workload.event(key)
      expect(workload.encoded(key)).toBe(JSON.stringify(event))
      expect(workload.topic(key)).toBe(event.topic)
      expect(workload.eventId(key)).toBe(event.event_id)
      expect(Workload.topicNamed(workload.fields(key).topicNumber)).toBe(event.topic)
    }
  })

  it.prop("the cursor gives the sends of the materialized workload, and then -1", [options], ([o]) => {
    const workload = new Workload(o)
    const cursor = workload.cursor()
    const items = generateWorkload(o).items
    for (const item of items) {
      expect(cursor.next()).toBe(item.key)
      expect(cursor.duplicate).toBe(item.duplicate)
    }
    expect(cursor.next()).toBe(-1)
    expect(cursor.position).toBe(o.events)
  })
})

describe("latencies in a fixed histogram", () => {
  const samples = fc.array(fc.double({ min: 0, max: 60_000, noNaN: true }), { minLength: 1, maxLength: 400 })
  const p = fc.double({ min: 0.001, max: 100, noNaN: true })

  it.prop("a percentile is the exact nearest-rank value or at most 0.1% (and 1 µs) above it, never above the maximum", [samples, p], ([xs, q]) => {
    const recorder = new LatencyRecorder()
    for (const x of xs) recorder.record(x)
    const exact = percentile(xs, q)!
    const approximate = recorder.percentile(q)!
    expect(approximate).toBeGreaterThanOrEqual(exact)
    expect(approximate).toBeLessThanOrEqual(exact * 1.001 + 0.001)
    expect(approximate).toBeLessThanOrEqual(Math.max(...xs))
    expect(recorder.percentile(100)).toBe(Math.max(...xs))
  })

  it.prop("the summary's buckets count exactly the samples, as histogramOf does", [samples], ([xs]) => {
    const recorder = new LatencyRecorder()
    for (const x of xs) recorder.record(x)
    const summary = recorder.summary()!
    expect(summary.samples).toBe(xs.length)
    expect(summary.histogram).toEqual(histogramOf(xs))
    expect(summary.p50).toBeLessThanOrEqual(summary.p95)
    expect(summary.p95).toBeLessThanOrEqual(summary.p99)
    expect(summary.p99).toBeLessThanOrEqual(summary.max)
  })
})
