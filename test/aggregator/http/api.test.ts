import { describe, expect, layer } from "@effect/vitest"
import { Effect, Schema } from "effect"
import * as Errors from "../../../src/domain/Errors.js"
import * as Event from "../../../src/domain/Event.js"
import { aggregatorLayer, event, postJson, promise, readyAggregator, unique } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { query } from "../../support/database.js"

// What the black-box suite (test/e2e) does not already check over HTTP: the OpenAPI document in depth, and
// the 422s for bodies it does not send.

describe.skipIf(skipWithoutPostgres)(`the HTTP API of an aggregator over PostgreSQL${withoutPostgresNote}`, () => {
layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("the HTTP API", (it) => {
  it.effect("422 at the root, storing nothing, for an array holding an event and for an object with a key written twice", () =>
    Effect.gen(function*() {
      const { databaseUrl, url } = yield* readyAggregator
      const topic = unique("bad")
      const res = yield* promise(() => postJson(`${url}/publish`, JSON.stringify([event(topic, "x")])))
      expect(res.status).toBe(422)
      const json: any = yield* promise(() => res.json())
      expect(json.error).toBe("validation_failed")
      expect(json.issues.map((i: any) => i.path)).toEqual([""])
      const duplicated = `{"topic":"${topic}","event_id":"d1","event_id":"d2","timestamp":"2025-01-01T00:00:00Z"}`
      const twice = yield* promise(() => postJson(`${url}/publish`, duplicated))
      expect(twice.status).toBe(422)
      expect(((yield* promise(() => twice.json())) as any).error).toBe("validation_failed")
      const rows = yield* promise(() => query(databaseUrl, "SELECT count(*)::int AS n FROM events WHERE topic = $1", [topic]))
      expect(rows[0].n).toBe(0)
    }))

  it.effect("serves its OpenAPI document (422 for validation, not the framework's 400) and Swagger UI at /docs", () =>
    Effect.gen(function*() {
      const { url } = yield* readyAggregator
      const spec: any = yield* promise(() => fetch(`${url}/openapi.json`).then((r) => r.json()))
      const publish = spec.paths["/publish"].post.responses
      expect(Object.keys(publish).sort()).toEqual(["200", "201", "401", "405", "413", "415", "422", "429", "503"])
      expect(publish["429"].headers["Retry-After"]).toBeDefined()
      expect(publish["503"].headers["Retry-After"]).toBeDefined()
      const resolve = (schema: any): any => schema?.$ref ? spec.components.schemas[schema.$ref.split("/").pop()] : schema
      const examplesOf = (schema: any): ReadonlyArray<unknown> | undefined => {
        const s = resolve(schema)
        if (s?.anyOf !== undefined) {
          const each = s.anyOf.map(examplesOf)
          return each.every((e: unknown) => e !== undefined) ? each.flat() : undefined
        }
        return s?.examples ?? (s?.type === "array" ? examplesOf(s.items) : undefined)
      }
      for (const [path, ops] of Object.entries(spec.paths) as Array<[string, any]>) {
        for (const [method, op] of Object.entries(ops) as Array<[string, any]>) {
          const where = `${method} ${path}`
          expect(op.responses["400"], where).toBeUndefined()
          expect(op.responses["405"]?.headers?.Allow, where).toBeDefined()
          expect(op.responses["422"], where).toBeDefined()
          for (const [status, response] of Object.entries(op.responses) as Array<[string, any]>) {
            expect(response.description, `${where} ${status}`).not.toMatch(/^(Success|Error)$/)
            const json = response.content?.["application/json"]
            if (json !== undefined) expect(examplesOf(json.schema), `${where} ${status} example`).toBeDefined()
          }
          const body = op.requestBody?.content?.["application/json"]
          if (body !== undefined) expect(examplesOf(body.schema), `${where} body example`).toBeDefined()
        }
      }
      // every example is valid for the schema it illustrates
      const { BatchInput, BatchResult, DroppedDuplicate, EventId, EventInput, Processed, Ready, Source, Stats, StoredEvent, Timestamp, Topic, TopicSummary, Alive } = Event
      const { MethodNotAllowed, NotFound, NotReady, Overloaded, PayloadTooLarge, StorageUnavailable, Unauthorized, UnsupportedMediaType, ValidationFailed } = Errors
      const schemas: Record<string, Schema.Schema.Any> = {
        EventInput, BatchInput, Processed, DroppedDuplicate, BatchResult, StoredEvent, Stats, Alive, Ready,
        ValidationFailed, PayloadTooLarge, UnsupportedMediaType, MethodNotAllowed, Unauthorized, NotFound,
        Overloaded, StorageUnavailable, NotReady, Topic, EventId, Timestamp, Source, TopicSummary
      }
      for (const [name, component] of Object.entries(spec.components.schemas) as Array<[string, any]>) {
        for (const example of component.examples ?? []) {
          expect(schemas[name], `a schema for the example of ${name}`).toBeDefined()
          expect(() => Schema.decodeUnknownSync(schemas[name] as Schema.Schema<unknown, unknown, never>)(example), name).not.toThrow()
        }
      }
      const docs = yield* promise(() => fetch(`${url}/docs`))
      expect(docs.status).toBe(200)
      expect(docs.headers.get("content-type")).toMatch(/text\/html/)
      // as locked down as the dashboard: the page needs nothing from another origin, so nothing is allowed
      expect(docs.headers.get("content-security-policy")).toMatch(/^default-src 'none';/)
      expect(docs.headers.get("content-security-policy")).toContain("frame-ancestors 'none'")
      expect(docs.headers.get("x-content-type-options")).toBe("nosniff")
      const page = yield* promise(() => docs.text())
      expect(page).not.toMatch(/(?:src|href)=["']?(?:https?:)?\/\//i)
      expect((yield* promise(() => fetch(`${url}/openapi.json`))).headers.get("x-content-type-options")).toBe("nosniff")
    }))
})
})
