import * as Chunk from "effect/Chunk"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as MutableRef from "effect/MutableRef"
import * as Schedule from "effect/Schedule"
import { Readable } from "node:stream"
import type { StoredEvent } from "../../domain/Event.js"
import { Overloaded } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import { Draining } from "../ops/Lifecycle.js"

/** Stored events as one live-tail client gets them: their Server-Sent Events frames, as bytes. */
export interface Piece {
  readonly events: ReadonlyArray<StoredEvent>
  readonly bytes: Buffer
}

export const sseFrame = (e: StoredEvent) => `id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`

const SLICE_BYTES = 2 * 1024 * 1024
const subscribed = Buffer.from(": subscribed\n\n")
const heartbeat: Piece = { events: [], bytes: Buffer.from(":\n\n") }

/**
 * Waits for one item, then takes what else has arrived meanwhile, up to `max` in all (`Queue.takeBetween(q, 1,
 * max)` on an empty queue answers the first item alone, leaving what was offered with it in the same step).
 */
const takeGathered = <A>(queue: Queue.Dequeue<A>, max: number): Effect.Effect<ReadonlyArray<A>> =>
  Effect.flatMap(Queue.take(queue), (first) =>
    Effect.map(Queue.takeUpTo(queue, max - 1), (rest) => [first, ...Chunk.toReadonlyArray(rest)]))

/** One batch of announced events, each encoded at most once, joined per audience on first use. */
class Encoded {
  private frames: Array<string> | undefined
  private readonly pieces = new Map<string | undefined, Piece | undefined>()
  constructor(readonly events: ReadonlyArray<StoredEvent>) {}
  for(topic: string | undefined): Piece | undefined {
    if (this.pieces.has(topic)) return this.pieces.get(topic)
    const frames = (this.frames ??= this.events.map(sseFrame))
    const chosen = topic === undefined ? this.events.map((_, i) => i) : this.events.flatMap((e, i) => e.topic === topic ? [i] : [])
    const piece = chosen.length === 0 ? undefined : {
      events: chosen.map((i) => this.events[i]),
      bytes: Buffer.from(chosen.map((i) => frames[i]).join(""))
    }
    this.pieces.set(topic, piece)
    return piece
  }
}

/**
 * One live-tail client's response body. Pieces wait here until the response's writer asks for more (it
 * stops asking while the socket is full), then all that waits is handed over at once; a client that would
 * have more than `budget` events waiting is refused the piece (and dropped by the hub).
 */
export class Tail extends Readable {
  private waiting: Array<Piece> = []
  private waitingEvents = 0
  private wanted = false
  private done = false
  constructor(readonly topic: string | undefined, private readonly budget: number) {
    super({ highWaterMark: 0 })
    this.push(subscribed)
  }
  override _read() {
    if (this.waiting.length === 0) {
      this.wanted = true
      return
    }
    const pieces = this.waiting
    this.waiting = []
    this.waitingEvents = 0
    for (const piece of pieces) this.push(piece.bytes)
  }
  /** Hands the piece on or keeps it; false when the client is too far behind to take it. */
  offer(piece: Piece): boolean {
    if (this.done || this.destroyed) return true
    if (this.wanted) {
      this.wanted = false
      this.push(piece.bytes)
      return true
    }
    // a heartbeat is only worth sending to a client that has nothing else coming
    if (piece.events.length === 0 && this.waiting.length > 0) return true
    if (this.waitingEvents + piece.events.length > this.budget) return false
    this.waiting.push(piece)
    this.waitingEvents += piece.events.length
    return true
  }
  /** Ends the response after what the writer already has; what still waits is not sent. */
  finish() {
    if (this.done || this.destroyed) return
    this.done = true
    this.waiting = []
    this.push(null)
  }
}

/**
 * The live-tail clients of this replica and the fan-out of announced events to them. Each gathered batch
 * is encoded once per audience (every topic, or one topic) and handed to each client as one shared buffer,
 * written to its socket with no fiber per client; a client more than STREAM_CLIENT_BUFFER_EVENTS events
 * behind is dropped (its connection destroyed). One heartbeat fiber serves every client; every stream ends
 * when shutdown begins.
 */
export class StreamHub extends Effect.Service<StreamHub>()("Aggregator/StreamHub", {
  scoped: Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const draining = yield* Draining
    // read synchronously by `deliver` (on every commit), so a MutableRef, not a Ref
    const clients = MutableRef.make<ReadonlyArray<Tail>>([])
    const heard = yield* Queue.unbounded<StoredEvent>()

    const remove = (gone: ReadonlySet<Tail>) => {
      MutableRef.update(clients, (all) => all.filter((c) => !gone.has(c)))
    }

    // Writing to hundreds of sockets takes a while (the kernel copies every byte): a fan-out lets the
    // event loop serve requests every SLICE_BYTES, as long as fewer than ANNOUNCE_BUFFER_EVENTS
    // events wait for the next one; past that it writes to every client before ingestion goes on.
    const pause = Effect.async<void>((resume) => {
      const timer = setImmediate(() => resume(Effect.void))
      return Effect.sync(() => clearImmediate(timer))
    })
    const mayPause = Effect.flatMap(Queue.size(heard), (backlog) => backlog < config.announceBufferEvents ? pause : Effect.void)

    const fanOut = (events: ReadonlyArray<StoredEvent>) =>
      Effect.gen(function*() {
        const all = MutableRef.get(clients)
        const batch = new Encoded(events)
        const behind = new Set<Tail>()
        let written = 0
        for (const client of all) {
          const piece = batch.for(client.topic)
          if (piece === undefined) continue
          if (!client.offer(piece)) behind.add(client)
          written += piece.bytes.length
          if (written >= SLICE_BYTES) {
            written = 0
            yield* mayPause
          }
        }
        if (behind.size === 0) return
        remove(behind)
        // destroying the body also destroys the response it is piped into, and so the connection
        behind.forEach((c) => c.destroy())
      })

    yield* takeGathered(heard, Number.MAX_SAFE_INTEGER).pipe(
      Effect.flatMap(fanOut),
      Effect.forever,
      Effect.forkScoped
    )

    yield* Effect.sync(() => MutableRef.get(clients).forEach((c) => c.offer(heartbeat))).pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(config.streamHeartbeatMs))),
      Effect.forkScoped
    )

    yield* draining.started.pipe(
      Effect.zipRight(Effect.sync(() => MutableRef.get(clients).forEach((c) => c.finish()))),
      Effect.forkScoped
    )

    /**
     * A new client's response body: `: subscribed`, then the events announced from now on (one topic or
     * all) as Server-Sent Events. It unsubscribes when closed. Past STREAM_MAX_CLIENTS it fails with Overloaded.
     */
    const subscribe = (topic: string | undefined) =>
      Effect.suspend(() => {
        const all = MutableRef.get(clients)
        if (all.length >= config.streamMaxClients) {
          return Effect.fail(
            new Overloaded({ message: `this replica serves at most ${config.streamMaxClients} live-tail clients; retry later` })
          )
        }
        const tail = new Tail(topic, config.streamClientBufferEvents)
        MutableRef.set(clients, [...all, tail])
        tail.once("close", () => remove(new Set([tail])))
        if (draining.isOn) tail.finish()
        return Effect.succeed(tail)
      })

    return {
      /**
       * Events heard from the transport, in order; never waits. With no client connected they are dropped at
       * once (a client gets what is announced after it subscribed): the fan-out's fiber and queue cost a
       * commit about a fifth of its CPU (bench/commit-cost.mjs) for nobody.
       */
      deliver: (events: ReadonlyArray<StoredEvent>) => {
        if (MutableRef.get(clients).length === 0) return
        for (const e of events) heard.unsafeOffer(e)
      },
      subscribe,
      clients: Effect.sync(() => MutableRef.get(clients).length)
    } as const
  }),
  dependencies: [Draining.Default]
}) {}
