import { expect, layer } from "@effect/vitest"
import { Effect, Either } from "effect"
import type { StoredEvent } from "../../src/domain/Event.js"
import { event, eventPath, get, post, seg, uniqueTopic } from "./support/http.js"
import { E2e, E2eLive } from "./support/target.js"

/** Publishes `n` events e0…e(n-1) in order, each acknowledged before the next. */
const publishSeries = (topic: string, n: number) =>
  Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) =>
    Effect.map(post("/publish", event(topic, `e${i}`, { payload: { i } })), (res) => expect(res.status).toBe(201)), {
      discard: true
    })

const ids = (events: ReadonlyArray<{ event_id: string }>) => events.map((e) => e.event_id)

const descendingSeqs = (events: ReadonlyArray<{ seq: number }>) => {
  for (let i = 1; i < events.length; i++) expect(events[i].seq).toBeLessThan(events[i - 1].seq)
}

layer(E2eLive, { excludeTestServices: true, timeout: "90 seconds" })("e2e: reading events back", (it) => {
  it.effect("GET /events?topic= lists only that topic, newest first", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("list")
      const neighbour = uniqueTopic("list-neighbour")
      yield* publishSeries(topic, 5)
      yield* publishSeries(neighbour, 2)
      const res = yield* get(`/events?topic=${seg(topic)}`)
      expect(res.status).toBe(200)
      expect(ids(res.json)).toEqual(["e4", "e3", "e2", "e1", "e0"])
      expect(res.json.every((e: any) => e.topic === topic)).toBe(true)
      descendingSeqs(res.json)
    }))

  it.effect("limit caps the page at the newest events", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("limit")
      yield* publishSeries(topic, 4)
      expect(ids((yield* get(`/events?topic=${seg(topic)}&limit=2`)).json)).toEqual(["e3", "e2"])
      expect(ids((yield* get(`/events?topic=${seg(topic)}&limit=1000`)).json)).toEqual(["e3", "e2", "e1", "e0"])
    }))

  it.effect("before pages backwards through a topic with no gap and no overlap", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("paging")
      yield* publishSeries(topic, 8)
      const seen: Array<string> = []
      let before: number | undefined = undefined
      for (let page = 0; page < 10; page++) {
        const events: ReadonlyArray<StoredEvent> = yield* client.events.list({
          urlParams: { topic, limit: 3, ...(before === undefined ? {} : { before }) }
        })
        if (events.length === 0) break
        expect(events.length).toBeLessThanOrEqual(3)
        descendingSeqs(events)
        if (before !== undefined) expect(events[0].seq).toBeLessThan(before)
        seen.push(...ids(events))
        before = events[events.length - 1].seq
      }
      expect(seen).toEqual(["e7", "e6", "e5", "e4", "e3", "e2", "e1", "e0"])
    }))

  it.effect("GET /events without a topic lists at most 20 events across topics, newest first", () =>
    Effect.gen(function*() {
      const { exclusive } = yield* E2e
      const topic = uniqueTopic("all")
      yield* publishSeries(topic, 2)
      const res = yield* get("/events")
      expect(res.status).toBe(200)
      expect(res.json.length).toBeGreaterThanOrEqual(2)
      expect(res.json.length).toBeLessThanOrEqual(20)
      descendingSeqs(res.json)
      // only a server this file owns is sure to have nothing newer than our own last event
      if (exclusive) expect(res.json.slice(0, 2).map((e: any) => [e.topic, e.event_id])).toEqual([[topic, "e1"], [topic, "e0"]])
    }))

  it.effect("the derived client's list decodes the same events the raw endpoint returns", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("client-list")
      yield* publishSeries(topic, 3)
      const typed = yield* client.events.list({ urlParams: { topic } })
      const raw = (yield* get(`/events?topic=${seg(topic)}`)).json
      expect(typed).toEqual(raw)
    }))

  it.effect("a topic with query-string characters is filtered exactly", () =>
    Effect.gen(function*() {
      const topic = `${uniqueTopic("q")} a&b=c+d?e#f%g`
      const lookalike = `${topic.split(" ")[0]} a`
      expect((yield* post("/publish", event(topic, "x"))).status).toBe(201)
      expect((yield* post("/publish", event(lookalike, "y"))).status).toBe(201)
      const res = yield* get(`/events?topic=${seg(topic)}`)
      expect(res.json.map((e: any) => [e.topic, e.event_id])).toEqual([[topic, "x"]])
    }))

  it.effect("GET /events/{topic}/{event_id} finds one event by its key", () =>
    Effect.gen(function*() {
      const topic = uniqueTopic("key")
      yield* publishSeries(topic, 3)
      const res = yield* get(eventPath(topic, "e1"))
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ topic, event_id: "e1", payload: { i: 1 }, source: null })
    }))

  it.effect("a missing event is a JSON 404 not_found, and the client fails with NotFound", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = uniqueTopic("missing")
      const res = yield* get(eventPath(topic, "nope"))
      expect(res.status).toBe(404)
      expect(res.headers.get("content-type")).toMatch(/^application\/json/)
      expect(res.json).toMatchObject({ error: "not_found" })
      expect(typeof res.json.message).toBe("string")
      const viaClient = yield* Effect.either(client.events.get({ path: { topic, event_id: "nope" } }))
      expect(Either.isLeft(viaClient) && viaClient.left._tag).toBe("NotFound")
    }))

  it.effect("URL-encoded path segments find a topic with a space and a slash, and an id with ? # %", () =>
    Effect.gen(function*() {
      const topic = `${uniqueTopic("path")} with space/and/slashes`
      const eventId = "id?with#reserved%chars/too"
      expect((yield* post("/publish", event(topic, eventId, { payload: "found" }))).status).toBe(201)
      const res = yield* get(eventPath(topic, eventId))
      expect(res.status).toBe(200)
      expect(res.json).toMatchObject({ topic, event_id: eventId, payload: "found" })
      // the encoded form of the topic is a different topic
      expect((yield* get(`/events/${seg(seg(topic))}/${seg(eventId)}`)).status).toBe(404)
    }))

  it.effect("the derived client finds a topic with a space and a slash", () =>
    Effect.gen(function*() {
      const { client } = yield* E2e
      const topic = `${uniqueTopic("client-path")} a/b`
      expect((yield* post("/publish", event(topic, "x/y"))).status).toBe(201)
      const stored = yield* client.events.get({ path: { topic, event_id: "x/y" } })
      expect(stored).toMatchObject({ topic, event_id: "x/y" })
    }))
})
