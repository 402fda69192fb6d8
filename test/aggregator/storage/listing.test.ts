import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { aggregatorLayer, clientOf, event, promise, readyAggregator, unique } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"

// Large listings: one answer holds about LIST_MAX_BYTES at most, and X-Next-Before says where to go on.

const server = readyAggregator

describe.skipIf(skipWithoutPostgres)(`listing within a response budget${withoutPostgresNote}`, () => {
  layer(aggregatorLayer({ LIST_MAX_BYTES: "20000" }), { excludeTestServices: true, timeout: "60 seconds" })(
    "an aggregator with LIST_MAX_BYTES=20000",
    (it) => {
      it.effect("a listing of large events stops at the budget with X-Next-Before; following it lists each event once", () =>
        Effect.gen(function*() {
          const { url } = yield* server
          const topic = unique("big")
          const blob = "z".repeat(6_000)
          const client = yield* clientOf(url)
          const stored = yield* client.events.publishBatch({
            payload: Array.from({ length: 10 }, (_, i) => event(topic, `e${i}`, { payload: { blob } }))
          })
          expect(stored.processed).toBe(10)
          const seen: Array<string> = []
          let before: string | null = null
          let answers = 0
          for (;;) {
            const res = yield* promise(() => fetch(`${url}/events?topic=${topic}&limit=1000${before !== null ? `&before=${before}` : ""}`))
            expect(res.status).toBe(200)
            const text = yield* promise(() => res.text())
            // 20,000 bytes hold three such events (each about 6.3 KB), not more
            expect(text.length).toBeLessThan(20_000)
            const events = JSON.parse(text) as Array<{ event_id: string; seq: number }>
            seen.push(...events.map((e) => e.event_id))
            answers++
            before = res.headers.get("x-next-before")
            if (before === null) break
            expect(Number(before)).toBe(events[events.length - 1].seq)
            // HEAD answers the same head, without the body
            const head = yield* promise(() =>
              fetch(`${url}/events?topic=${topic}&limit=1000&before=${before}`, { method: "HEAD" })
            )
            expect(head.status).toBe(200)
            expect(head.headers.get("x-next-before") === null).toBe(seen.length + 3 >= 10)
          }
          expect(answers).toBe(4)
          expect(seen).toEqual(Array.from({ length: 10 }, (_, i) => `e${9 - i}`))
          // a page that is full by its limit also says where to go on; the last page does not
          const limited = yield* promise(() => fetch(`${url}/events?topic=${topic}&limit=2`))
          expect(limited.headers.get("x-next-before")).not.toBeNull()
          const small = yield* client.events.publish({ payload: event(unique("small"), "only") })
          expect(small.status).toBe("processed")
        }))
    }
  )
})
