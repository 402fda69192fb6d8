import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { AggregatorConfig } from "../Config.js"
import { Draining } from "../ops/Lifecycle.js"
import { Broker } from "./Broker.js"

const subscribed = new TextEncoder().encode(": subscribed\n\n")
const heartbeat = new TextEncoder().encode(":\n\n")

/**
 * The live tail's frames for one client of `GET /events/stream`. The client is subscribed before its answer
 * starts, so nothing stored after the first line is missed, and one past STREAM_MAX_CLIENTS gets a 429
 * instead. Every stream ends when shutdown begins. A client that falls behind is dropped: its frames end,
 * and as the writer may be stuck waiting for a socket the client no longer reads (a stream that is not
 * pulled cannot end), the connection is destroyed, which also ends the response. Frames come encoded once
 * for all clients (Broker).
 */
export class LiveTail extends Effect.Service<LiveTail>()("Aggregator/LiveTail", {
  effect: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const broker = yield* Broker
    const draining = yield* Draining
    const frames = (topic: string | undefined, connection: { readonly destroy: () => void }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const tail = yield* broker.subscribe(topic).pipe(Scope.extend(scope), Effect.tapError(() => Scope.close(scope, Exit.void)))
        yield* Queue.awaitShutdown(tail.queue).pipe(
          Effect.zipRight(Effect.sync(() => connection.destroy())),
          Effect.forkIn(scope)
        )
        return Stream.make(subscribed).pipe(
          Stream.concat(Stream.merge(
            tail.frames,
            Stream.fromSchedule(Schedule.spaced(Duration.millis(config.streamHeartbeatMs))).pipe(Stream.as(heartbeat)),
            { haltStrategy: "left" }
          )),
          Stream.interruptWhen(draining.started),
          Stream.ensuring(Scope.close(scope, Exit.void))
        )
      })
    return { frames } as const
  }),
  dependencies: [Broker.Default, Draining.Default]
}) {}
