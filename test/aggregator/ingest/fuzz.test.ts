import { describe, expect, layer } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import * as net from "node:net"
import { gzipSync } from "node:zlib"
import { validateItem } from "../../../src/aggregator/ingest/Validation.js"
import { aggregatorLayer, TestAggregator, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { query } from "../../support/database.js"
import { until } from "../../support/live.js"

// Thousands of generated hostile requests interleaved with valid events, against a live server: every hostile
// one is a 4xx with a JSON error and stores nothing; no 5xx ever; every valid one is stored; the server stays up.

interface Case {
  readonly kind: string
  readonly path: "/publish" | "/publish/batch"
  readonly headers: Record<string, string>
  readonly body: Uint8Array | string
}

const enc = new TextEncoder()
const json = (v: unknown) => JSON.stringify(v)
const jsonHeaders = { "content-type": "application/json" }

const validEvent = (topic: string) =>
  fc.record({
    topic: fc.constant(topic),
    event_id: fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes("\u0000")),
    timestamp: fc.date({ min: new Date("1970-01-01"), max: new Date("2100-01-01"), noInvalidDate: true }).map((d) => d.toISOString()),
    payload: fc.option(fc.jsonValue({ maxDepth: 4 }), { nil: undefined })
  }).map((e) => Object.fromEntries(Object.entries(e).filter(([, v]) => v !== undefined)))

const deep = (n: number): unknown => (n === 0 ? 1 : [deep(n - 1)])

const hostile = (topic: string): fc.Arbitrary<Case> =>
  fc.oneof(
    // random bytes claiming to be JSON
    fc.uint8Array({ maxLength: 300 }).map((b) => ({ kind: "bytes", path: "/publish" as const, headers: jsonHeaders, body: b })),
    // any JSON value at all (objects with random fields, arrays, scalars)
    fc.jsonValue({ maxDepth: 3 }).map((v) => ({ kind: "json", path: "/publish" as const, headers: jsonHeaders, body: json(v) })),
    // a valid event with one field broken
    fc.tuple(validEvent(topic), fc.constantFrom("topic", "event_id", "timestamp", "source"), fc.oneof(
      fc.constant(null), fc.integer(), fc.boolean(), fc.constant([]), fc.constant({}), fc.constant(""),
      fc.constant("x".repeat(300)), fc.constant("a\u0000b"), fc.constant("\ud800"), fc.constant("2025-13-45T99:99:99Z")
    )).map(([e, field, bad]) => ({ kind: `bad-${field}`, path: "/publish" as const, headers: jsonHeaders, body: json({ ...e, [field]: bad }) })),
    // payloads PostgreSQL cannot store or we refuse
    fc.tuple(validEvent(topic), fc.constantFrom<[string, unknown]>(
      ["nul", { s: "\u0000" }], ["surrogate", ["\udc00"]], ["deep", deep(200)], ["huge", "y".repeat(70_000)]
    )).map(([e, [kind, payload]]) => ({ kind: `payload-${kind}`, path: "/publish" as const, headers: jsonHeaders, body: json({ ...e, payload }) })),
    // numbers out of range, via raw text
    validEvent(topic).map((e) => ({
      kind: "payload-1e400",
      path: "/publish" as const,
      headers: jsonHeaders,
      body: json({ ...e, payload: "__N__" }).replace("\"__N__\"", "1e400")
    })),
    // truncated or corrupted JSON
    fc.tuple(validEvent(topic), fc.nat()).map(([e, cut]) => {
      const text = json(e)
      return { kind: "truncated", path: "/publish" as const, headers: jsonHeaders, body: text.slice(0, cut % (text.length - 1)) }
    }),
    // invalid UTF-8 inside a string
    validEvent(topic).map((e) => {
      const text = enc.encode(json({ ...e, source: "__S__" }))
      const at = Buffer.from(text).indexOf("__S__")
      const bytes = Uint8Array.from(text)
      bytes[at] = 0xff
      return { kind: "utf8", path: "/publish" as const, headers: jsonHeaders, body: bytes }
    }),
    // content types and encodings we do not take
    fc.tuple(validEvent(topic), fc.constantFrom("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"))
      .map(([e, type]) => ({ kind: "content-type", path: "/publish" as const, headers: { "content-type": type }, body: json(e) })),
    // no content type at all: a byte body, for which fetch adds none
    validEvent(topic).map((e) => ({ kind: "no-content-type", path: "/publish" as const, headers: {}, body: new TextEncoder().encode(json(e)) })),
    fc.tuple(validEvent(topic), fc.constantFrom("br", "compress", "zstd"))
      .map(([e, encoding]) => ({ kind: "encoding", path: "/publish" as const, headers: { ...jsonHeaders, "content-encoding": encoding }, body: json(e) })),
    validEvent(topic).map((e) => ({
      kind: "fake-gzip",
      path: "/publish" as const,
      headers: { ...jsonHeaders, "content-encoding": "gzip" },
      body: json(e)
    })),
    // batch envelopes that are not batches
    fc.oneof(fc.constant({}), fc.constant({ events: {} }), fc.constant({ events: "x" }), fc.constant(7), fc.constant(null), fc.constant("[]"))
      .map((v) => ({ kind: "batch-envelope", path: "/publish/batch" as const, headers: jsonHeaders, body: json(v) }))
  )

const send = (url: string, c: Case) =>
  fetch(`${url}${c.path}`, { method: "POST", headers: c.headers, body: c.body }).then(async (r) => {
    const text = await r.text()
    let body: any
    try {
      body = JSON.parse(text)
    } catch {
      body = undefined
    }
    return { status: r.status, body }
  })

describe.skipIf(skipWithoutPostgres)(`hostile input${withoutPostgresNote}`, () => {
  layer(aggregatorLayer(), { excludeTestServices: true, timeout: "120 seconds" })("fuzz", (it) => {
    it.effect("10,000 generated hostile requests: all 4xx with a JSON error, none stored, no 5xx; interleaved valid events all stored", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* TestAggregator
        yield* Effect.promise(() => waitFor(`${url}/ready`))
        const topic = `fuzz-${Date.now().toString(36)}`
        const seed = Date.now() % 1_000_000
        const hostileCases = fc.sample(hostile(topic), { numRuns: 10_400, seed })
        const validCases = fc.sample(validEvent(topic), { numRuns: 1_000, seed: seed + 1 })
          .map((e): Case => ({ kind: "valid", path: "/publish", headers: jsonHeaders, body: json(e) }))
        // Unknown fields are ignored, so a generated body may happen to be a valid event: classify with the
        // server's own rules and expect a store for those.
        const isValid = (c: Case) => {
          if (c.path !== "/publish" || c.headers["content-type"] !== "application/json" || c.headers["content-encoding"]) return false
          try {
            const text = typeof c.body === "string" ? c.body : new TextDecoder("utf-8", { fatal: true }).decode(c.body)
            return Either.isRight(validateItem(JSON.parse(text), 64 * 1024))
          } catch {
            return false
          }
        }
        const cases: Array<Case> = []
        hostileCases.forEach((c, i) => {
          cases.push(c)
          if (i % 10 === 0 && i / 10 < validCases.length) cases.push(validCases[i / 10])
        })
        cases.push({ kind: "gzip-valid", path: "/publish", headers: { ...jsonHeaders, "content-encoding": "gzip" }, body: gzipSync(json({ topic, event_id: "gz", timestamp: "2025-01-01T00:00:00Z" })) })

        const before: any = yield* Effect.promise(() => fetch(`${url}/stats`).then((r) => r.json()))
        const answers = yield* Effect.forEach(cases, (c) => Effect.promise(() => send(url, c)), { concurrency: 16 })

        const problems: Array<string> = []
        const storedKeys = new Set<string>()
        let hostileAnswered = 0
        answers.forEach((a, i) => {
          const c = cases[i]
          const expectStore = c.kind === "valid" || c.kind === "gzip-valid" || isValid(c)
          if (a.status >= 500) problems.push(`${c.kind}: ${a.status}`)
          if (expectStore) {
            if (a.status !== 201 && a.status !== 200) {
              problems.push(`${c.kind} (valid): ${a.status} ${JSON.stringify(a.body)} for ${String(c.body).slice(0, 300)}`)
            }
            if (a.status === 201) storedKeys.add(`${a.body.topic}\u0000${a.body.id}`)
            return
          }
          hostileAnswered++
          if (a.status < 400 || a.status >= 500) problems.push(`${c.kind}: ${a.status}`)
          if (typeof a.body?.error !== "string") problems.push(`${c.kind}: ${a.status} without a JSON error body`)
        })
        const byStatus: Record<string, number> = {}
        answers.forEach((a) => (byStatus[a.status] = (byStatus[a.status] ?? 0) + 1))
        console.log(`[fuzz] ${JSON.stringify({ requests: cases.length, hostile: hostileAnswered, valid_or_valid_by_chance: cases.length - hostileAnswered, stored: storedKeys.size, by_status: byStatus, seed })}`)
        expect(problems.slice(0, 20)).toEqual([])
        expect(hostileAnswered).toBeGreaterThanOrEqual(10_000)

        // the database is this file's own: every row in it must be one a client was told is stored
        const rows = yield* Effect.promise(() => query(databaseUrl, "SELECT topic, event_id FROM events"))
        expect(new Set(rows.map((r) => `${r.topic}\u0000${r.event_id}`))).toEqual(storedKeys)
        const after: any = yield* Effect.promise(() => fetch(`${url}/stats`).then((r) => r.json()))
        expect(after.database_total_rows - before.database_total_rows).toBe(storedKeys.size)
        expect(after.uptime_stats.rejected - before.uptime_stats.rejected).toBe(hostileAnswered - cases.filter((c) => c.path === "/publish/batch").length)
        const ready = yield* Effect.promise(() => fetch(`${url}/ready`))
        expect(ready.status).toBe(200)
      }), 180_000)
  })
})

// ---------------------------------------------------------------------------------------------
// Issue 15's hostile clients as generated properties, each against a server of its own (small limits).

const MAX_BODY = 64 * 1024
const MAX_STREAMS = 3

/** One raw HTTP/1.1 exchange on a fresh connection: `path` sent as is (no URL normalisation), the answer read to its end. */
const rawExchange = (
  url: string,
  options: {
    readonly method?: string
    readonly path: string
    readonly headers?: Record<string, string>
    readonly body?: Buffer
    readonly chunked?: boolean
    readonly expectContinue?: boolean
  }
) =>
  new Promise<{ readonly status: number; readonly interim: ReadonlyArray<number>; readonly body: any }>((resolve, reject) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect(Number(port), hostname)
    const body = options.body ?? Buffer.alloc(0)
    const head = [
      `${options.method ?? "POST"} ${options.path} HTTP/1.1`,
      `host: ${hostname}:${port}`,
      "content-type: application/json",
      options.chunked ? "transfer-encoding: chunked" : `content-length: ${body.length}`,
      ...(options.expectContinue ? ["expect: 100-continue"] : []),
      ...Object.entries(options.headers ?? {}).map(([k, v]) => `${k}: ${v}`),
      "",
      ""
    ].join("\r\n")
    const framed = options.chunked ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from("\r\n0\r\n\r\n")]) : body
    let received = Buffer.alloc(0)
    let sentBody = false
    const sendBody = () => {
      if (sentBody) return
      sentBody = true
      // written whole before reading anything, as Python's httpx does; the server may close meanwhile
      socket.write(framed, () => {})
    }
    const interim: Array<number> = []
    const finish = () => {
      socket.destroy()
      let text = received.toString("latin1")
      for (;;) {
        const m = /^HTTP\/1\.1 (\d{3})[^\r]*\r\n/.exec(text)
        if (m === null) return reject(new Error(`no answer: ${JSON.stringify(text.slice(0, 200))}`))
        const end = text.indexOf("\r\n\r\n")
        const status = Number(m[1])
        if (status >= 200) {
          const rest = Buffer.from(text.slice(end + 4), "latin1").toString("utf8")
          let parsed: any
          try {
            parsed = JSON.parse(rest)
          } catch {
            parsed = rest
          }
          return resolve({ status, interim, body: parsed })
        }
        interim.push(status)
        text = text.slice(end + 4)
      }
    }
    socket.on("error", () => {})
    socket.on("close", finish)
    socket.on("connect", () => {
      socket.write(head)
      if (!options.expectContinue) sendBody()
    })
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk])
      const text = received.toString("latin1")
      if (options.expectContinue && !sentBody && /^HTTP\/1\.1 100 /.test(text)) sendBody()
      // a final answer with its whole body: done, whether or not the server closes
      const final = /(?:^|\r\n\r\n)HTTP\/1\.1 ([2-5]\d\d)[^]*?\r\n\r\n/.exec(text)
      if (final !== null) {
        const length = /content-length: (\d+)/i.exec(final[0])
        if (length !== null && received.length >= final.index + Buffer.byteLength(final[0], "latin1") + Number(length[1])) finish()
      }
    })
  })

const oneEvent = (topic: string, event_id: string) => ({ topic, event_id, timestamp: "2025-01-01T00:00:00Z", payload: { n: 1 } })

/** JSON text nested `depth` levels deep, as arrays or objects, around a scalar. */
const nested = (depth: number, shape: "array" | "object") =>
  shape === "array" ? "[".repeat(depth) + "1" + "]".repeat(depth) : "{\"a\":".repeat(depth) + "1" + "}".repeat(depth)

describe.skipIf(skipWithoutPostgres)(`hostile clients, generated (issue 15)${withoutPostgresNote}`, () => {
  layer(aggregatorLayer({ MAX_BODY_BYTES: String(MAX_BODY), STREAM_MAX_CLIENTS: String(MAX_STREAMS) }), {
    excludeTestServices: true,
    timeout: "120 seconds"
  })("issue 15", (it) => {
    const stats = (url: string) => Effect.promise(() => fetch(`${url}/stats`).then((r) => r.json() as Promise<any>))
    /** This block's server, once it answers /ready. */
    const ready = Effect.tap(TestAggregator, ({ url }) => Effect.promise(() => waitFor(`${url}/ready`)))
    const holds = (property: fc.IAsyncProperty<any>, numRuns: number) => Effect.promise(() => fc.assert(property, { numRuns }))
    const storedCount = (databaseUrl: string, topic: string) =>
      Effect.promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]).then((rows) => rows[0].n as number))

    it.effect("deep nesting anywhere, at any depth past the guard, is a 422; in a batch only the deep item is refused", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* ready
        let run = 0
        yield* holds(
          fc.asyncProperty(
            // within MAX_BODY_BYTES (64 KiB here) at 6 bytes a level
            fc.integer({ min: 101, max: 10_000 }),
            fc.constantFrom<"array" | "object">("array", "object"),
            fc.constantFrom("body", "topic", "event_id", "timestamp", "source", "payload", "envelope", "item"),
            fc.integer({ min: 0, max: 4 }),
            fc.integer({ min: 0, max: 4 }),
            async (depth, shape, where, before, after) => {
              const topic = `deep-${run++}-${Date.now().toString(36)}`
              const deepText = nested(depth, shape)
              const valid = (n: number, tag: string) => Array.from({ length: n }, (_, i) => JSON.stringify(oneEvent(topic, `${tag}${i}`)))
              const withField = (field: string) => JSON.stringify({ ...oneEvent(topic, "x"), [field]: "__DEEP__" }).replace("\"__DEEP__\"", deepText)
              const rejectedBefore = (await fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)).uptime_stats.rejected
              if (where === "item" || where === "envelope") {
                const items = [...valid(before, "b"), deepText, ...valid(after, "a")]
                const body = where === "item" ? `[${items.join(",")}]` : `{"events":${deepText}}`
                const res = await rawExchange(url, { path: "/publish/batch", body: Buffer.from(body) })
                // an envelope whose `events` nests arrays is a batch of one deep item (below)
                if (where === "envelope" && shape === "object") {
                  expect(res.status).toBe(422)
                  expect(res.body.error).toBe("validation_failed")
                  expect(await Effect.runPromise(storedCount(databaseUrl, topic))).toBe(0)
                  return
                }
                const [kept, at] = where === "item" ? [before + after, before] : [0, 0]
                expect(res.status).toBe(200)
                expect([res.body.processed, res.body.rejected]).toEqual([kept, 1])
                expect(res.body.results[at]).toMatchObject({ index: at, status: "rejected" })
                expect(await Effect.runPromise(storedCount(databaseUrl, topic))).toBe(kept)
                return
              }
              const body = where === "body" ? deepText : withField(where)
              const res = await rawExchange(url, { path: "/publish", body: Buffer.from(body) })
              expect(res.status).toBe(422)
              expect(res.body.error).toBe("validation_failed")
              expect(await Effect.runPromise(storedCount(databaseUrl, topic))).toBe(0)
              const rejectedAfter = (await fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)).uptime_stats.rejected
              expect(rejectedAfter - rejectedBefore).toBe(1)
            }
          ),
          60
        )
      }), 120_000)

    it.effect("other spellings of /publish and /publish/batch are JSON 404s that store and count nothing", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* ready
        const declared = new Set(["/publish", "/publish/", "/publish/batch", "/publish/batch/"])
        const spelling = fc.tuple(
          fc.constantFrom("/publish", "/publish/batch"),
          fc.constantFrom("slashes", "case", "percent", "param", "suffix"),
          fc.integer({ min: 2, max: 4 }),
          fc.array(fc.boolean(), { minLength: 13, maxLength: 13 }),
          fc.stringMatching(/^[a-z0-9=]{0,6}$/)
        ).map(([path, how, n, flips, extra]) => {
          switch (how) {
            case "slashes":
              return "/".repeat(n) + path.slice(1)
            case "case":
              return [...path].map((ch, i) => flips[i] ? ch.toUpperCase() : ch).join("")
            case "percent":
              return [...path].map((ch, i) => flips[i] && /[a-z]/.test(ch) ? `%${ch.charCodeAt(0).toString(16)}` : ch).join("")
            case "param":
              return `${path};${extra}`
            default:
              return `${path}/${"./".repeat(n - 1)}`
          }
        }).filter((p) => !declared.has(p))
        const before = yield* stats(url)
        let run = 0
        yield* holds(
          fc.asyncProperty(spelling, async (path) => {
            const topic = `odd-${run++}-${Date.now().toString(36)}`
            const body = path.toLowerCase().includes("batch") || path.includes("%62") ? [oneEvent(topic, "e")] : oneEvent(topic, "e")
            const res = await rawExchange(url, { path, body: Buffer.from(JSON.stringify(body)) })
            expect([path, res.status]).toEqual([path, 404])
            expect(res.body.error).toBe("not_found")
            expect(await Effect.runPromise(storedCount(databaseUrl, topic))).toBe(0)
          }),
          80
        )
        const after = yield* stats(url)
        expect(after.uptime_stats).toEqual(before.uptime_stats)
      }), 120_000)

    it.effect("a body over MAX_BODY_BYTES sent whole before reading is answered 413 the client reads, however it is framed", () =>
      Effect.gen(function*() {
        const { databaseUrl, url } = yield* ready
        let run = 0
        yield* holds(
          fc.asyncProperty(
            fc.integer({ min: MAX_BODY + 1, max: 40 * MAX_BODY }),
            fc.constantFrom("/publish", "/publish/batch"),
            fc.boolean(),
            fc.boolean(),
            async (size, path, chunked, expectContinue) => {
              const topic = `big-${run++}-${Date.now().toString(36)}`
              const event = JSON.stringify({ ...oneEvent(topic, "e"), payload: { blob: "" } })
              const padded = event.replace("\"blob\":\"\"", `"blob":"${"z".repeat(Math.max(0, size - event.length))}"`)
              const text = path === "/publish" ? padded : `[${padded}]`
              const res = await rawExchange(url, { path, body: Buffer.from(text), chunked, expectContinue })
              expect([size, chunked, expectContinue, res.status]).toEqual([size, chunked, expectContinue, 413])
              expect(res.body.error).toBe("payload_too_large")
              // refused from its declared length, before any 100 Continue
              if (expectContinue && !chunked) expect(res.interim).toEqual([])
              expect(await Effect.runPromise(storedCount(databaseUrl, topic))).toBe(0)
            }
          ),
          40
        )
      }), 120_000)

    it.effect("however many live-tail clients arrive at once, exactly STREAM_MAX_CLIENTS are served and the rest get a 429", () =>
      Effect.gen(function*() {
        const { url } = yield* ready
        yield* holds(
          fc.asyncProperty(fc.integer({ min: 1, max: 4 * MAX_STREAMS }), fc.constantFrom(undefined, "a", "b"), async (n, topic) => {
            const controllers = Array.from({ length: n }, () => new AbortController())
            const answers = await Promise.all(controllers.map((c) => fetch(`${url}/events/stream${topic ? `?topic=${topic}` : ""}`, { signal: c.signal })))
            const served = answers.filter((r) => r.status === 200)
            const refused = answers.filter((r) => r.status === 429)
            expect([served.length, refused.length]).toEqual([Math.min(n, MAX_STREAMS), Math.max(0, n - MAX_STREAMS)])
            for (const r of refused) {
              expect(r.headers.get("retry-after")).toMatch(/^\d+$/)
              expect((await r.json() as any).error).toBe("overloaded")
            }
            expect((await fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)).stream_clients).toBe(served.length)
            controllers.forEach((c) => c.abort())
            await until("every client unsubscribed", async () => (await fetch(`${url}/stats`).then((r) => r.json() as Promise<any>)).stream_clients === 0)
          }),
          15
        )
      }), 120_000)
  })
})
