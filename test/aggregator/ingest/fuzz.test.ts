import { describe, expect, layer } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import { gzipSync } from "node:zlib"
import { validateItem } from "../../../src/aggregator/ingest/Validation.js"
import { aggregatorLayer, TestAggregator, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { query } from "../../support/database.js"

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
