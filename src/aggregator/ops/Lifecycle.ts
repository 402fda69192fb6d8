import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as MutableRef from "effect/MutableRef"
import type * as Http from "node:http"
import * as Net from "node:net"
import { AggregatorConfig } from "../Config.js"

/** The Node server instance behind the Effect HttpServer, so shutdown can drain it itself. */
export class NodeServer extends Context.Tag("Aggregator/NodeServer")<NodeServer, Http.Server>() {}

/**
 * Set once shutdown begins: responses then carry `Connection: close` so keep-alive clients let go, and
 * long-lived responses (the live tail) end so the server can close.
 */
export class Draining extends Effect.Service<Draining>()("Aggregator/Draining", {
  effect: Effect.map(Deferred.make<void>(), (started) => {
    // read synchronously by every answer's headers (a pre-response handler), so a MutableRef, not a Ref
    const on = MutableRef.make(false)
    return {
      get isOn() {
        return MutableRef.get(on)
      },
      started: Deferred.await(started),
      start: Effect.suspend(() => {
        MutableRef.set(on, true)
        return Deferred.succeed(started, undefined)
      }).pipe(Effect.asVoid)
    }
  })
}) {}

/**
 * Graceful shutdown, first of all finalizers: stop accepting, let every in-flight request finish (its
 * write commits, its answer is sent), close keep-alive connections after each one's next answer, or after a
 * grace period for those that stay idle; only then does the
 * framework unhook its handler and the batcher and pool close. Bounded by SHUTDOWN_TIMEOUT_MS.
 */
export const DrainOnShutdownLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const server = yield* NodeServer
    const draining = yield* Draining
    const config = yield* AggregatorConfig
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* Effect.logInfo("shutting down: draining in-flight requests")
        yield* draining.start
        const closed = Effect.async<void>((resume) => {
          // Stop accepting, but not through http.Server#close: since Node 19 it also closes idle keep-alive
          // connections at once, resetting a request that is already on its way over one of them. Those get
          // SHUTDOWN_IDLE_GRACE_MS to arrive (their answer says `Connection: close`); connections idle through
          // all of it are closed then. The callback runs once every connection has ended.
          Net.Server.prototype.close.call(server, () => resume(Effect.void))
          let idle: ReturnType<typeof setInterval> | undefined
          const grace = setTimeout(() => {
            server.closeIdleConnections()
            idle = setInterval(() => server.closeIdleConnections(), 50)
          }, config.shutdownIdleGraceMs)
          return Effect.sync(() => {
            clearTimeout(grace)
            clearInterval(idle)
          })
        })
        // Interruptible, or the timeout could not cut it (finalizers run uninterruptibly). The drain leaves
        // part of SHUTDOWN_TIMEOUT_MS for the batcher and the connections to close before ExitDeadlineLive.
        yield* closed.pipe(
          Effect.interruptible,
          Effect.timeoutTo({
            duration: Duration.millis(config.shutdownTimeoutMs - Math.min(2_000, Math.floor(config.shutdownTimeoutMs / 4))),
            onSuccess: () => Effect.logInfo("drained"),
            onTimeout: () =>
              Effect.logWarning("shutdown timeout: closing remaining connections").pipe(
                Effect.zipRight(Effect.sync(() => server.closeAllConnections()))
              )
          }),
          Effect.flatten
        )
      })
    )
  })
)

/**
 * For the process only (not the in-process test server): once SIGTERM or SIGINT arrives, the process exits
 * within SHUTDOWN_TIMEOUT_MS whatever a finalizer is still waiting for (a backend that never answers,
 * say). Cutting it short loses nothing acknowledged: an event is answered only after its commit.
 */
export const ExitDeadlineLive = Layer.effectDiscard(
  Effect.map(AggregatorConfig, (config) => {
    const arm = () => {
      setTimeout(() => {
        process.stderr.write(
          JSON.stringify({ message: "shutdown deadline passed: exiting", logLevel: "ERROR", timestamp: new Date().toISOString() }) + "\n"
        )
        process.exit(1)
      }, config.shutdownTimeoutMs).unref()
    }
    process.once("SIGTERM", arm)
    process.once("SIGINT", arm)
  })
)
