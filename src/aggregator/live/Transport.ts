import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import type { Redis, RedisOptions } from "ioredis"
import { StoredEvent } from "../../domain/Event.js"

/** How announcements leave this process, and the Redis connection for commands when there is one. */
export interface Transport {
  /** Sends the events; answers how many could not be sent. */
  readonly publish: (events: ReadonlyArray<StoredEvent>) => Effect.Effect<number>
  readonly commands: Option.Option<Redis>
}

const REDIS_TIMEOUT = Duration.seconds(5)

export const escapeGlob = (s: string) => s.replace(/[*?[\]\\]/g, "\\$&")
const decodeEvent = Schema.decodeUnknownOption(Schema.parseJson(StoredEvent))

/** A Redis command's answer, or none when it failed or took longer than 5 s. */
export const attempt = <A>(f: () => Promise<A>) =>
  // interruptible, so the timeout also holds in a shutdown finalizer (which runs uninterruptibly)
  Effect.tryPromise(f).pipe(Effect.interruptible, Effect.timeoutFail({ duration: REDIS_TIMEOUT, onTimeout: () => "timeout" }), Effect.option)

// Reconnects by itself, backing off up to 2 s; with no offline queue a command fails at once while down.
const retryStrategy = (attempt: number) => Math.min(50 * 2 ** Math.min(attempt, 6), 2_000)

/** Everything stays in this process: what is published is heard at once. */
export const inProcess = (heard: (events: ReadonlyArray<StoredEvent>) => void): Transport => ({
  publish: (events) =>
    Effect.sync(() => {
      heard(events)
      return 0
    }),
  commands: Option.none()
})

// ioredis is loaded only when REDIS_URL is set: importing it costs about 20 MiB of resident memory
const loadRedis = Effect.promise(() => import("ioredis"))

const connection = (url: string, name: string, options: RedisOptions) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const log = Runtime.runFork(yield* Effect.runtime<never>())
      const { Redis } = yield* loadRedis
      const redis = new Redis(url, { connectionName: `log-aggregator-${name}`, retryStrategy, ...options })
      let down = false
      redis.on("ready", () => {
        if (down) log(Effect.logInfo(`redis ${name} connection is back`))
        down = false
      })
      redis.on("error", (e: Error) => {
        if (!down) log(Effect.logWarning(`redis ${name} connection failed; retrying`, e.message))
        down = true
      })
      return redis
    }),
    (redis) =>
      // A release runs uninterruptibly, and a timeout cannot cut an uninterruptible wait: `quit` on a
      // connection that never came up waits forever unless the wait itself is made interruptible.
      Effect.tryPromise(() => redis.quit()).pipe(
        Effect.interruptible,
        Effect.timeout(Duration.seconds(1)),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => redis.disconnect()))
      )
  )

/**
 * Announcements over Redis: one channel a topic, one pipelined PUBLISH an event; one subscriber connection
 * a process hears every replica's. The subscriber queues its PSUBSCRIBE until connected and subscribes
 * again after every reconnect.
 */
export const overRedis = (
  url: string,
  prefix: string,
  heard: (events: ReadonlyArray<StoredEvent>) => void
): Effect.Effect<Transport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const pub = yield* connection(url, "publisher", { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
    const sub = yield* connection(url, "subscriber", { maxRetriesPerRequest: null })
    sub.on("pmessage", (_pattern: string, _channel: string, message: string) => {
      const event = decodeEvent(message)
      if (Option.isSome(event)) heard([event.value])
    })
    yield* attempt(() => sub.psubscribe(`${escapeGlob(prefix)}events:*`)).pipe(
      Effect.flatMap(Option.match({
        onNone: () => Effect.logWarning("redis subscribe pending; it completes once redis answers"),
        onSome: () => Effect.void
      })),
      Effect.forkScoped
    )

    const publish = (events: ReadonlyArray<StoredEvent>) => {
      if (pub.status !== "ready") return Effect.succeed(events.length)
      return attempt(() => {
        const pipeline = pub.pipeline()
        for (const e of events) pipeline.publish(`${prefix}events:${e.topic}`, JSON.stringify(e))
        return pipeline.exec()
      }).pipe(Effect.map(Option.match({
        onNone: () => events.length,
        onSome: (results) => results === null ? events.length : results.filter(([error]) => error !== null).length
      })))
    }

    return { publish, commands: Option.some(pub) } satisfies Transport
  })
