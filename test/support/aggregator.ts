import { FetchHttpClient, HttpServer } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import { ConfigProvider, Effect, Layer } from "effect"
import { AggregatorLive } from "../../src/aggregator/Aggregator.js"
import { ApiMiddlewareLive } from "../../src/aggregator/http/Middleware.js"
import { ApiLive, ServeLive } from "../../src/aggregator/http/Server.js"
import { type Client, makeClient } from "../../src/client/Client.js"
import { freshDatabase } from "./database.js"

export interface Running {
  readonly url: string
  readonly databaseUrl: string
}

/**
 * An in-process aggregator on a fresh database and a free loopback port, torn down (database dropped)
 * when the layer's scope closes. `env` overrides settings as the environment would.
 */
export const aggregatorLayer = (env: Record<string, string> = {}) =>
  Layer.unwrapScoped(
    Effect.gen(function*() {
      const db = yield* Effect.acquireRelease(
        Effect.promise(() => freshDatabase("srv")),
        (db) => Effect.promise(() => db.drop())
      )
      return serving({ DATABASE_URL: db.url, ...env }, db.url)
    })
  )

/** The same on the embedded default: PGlite in memory, no DATABASE_URL (`databaseUrl` is then ""). */
export const embeddedAggregatorLayer = (env: Record<string, string> = {}) => serving({ DATA_DIR: "memory://", ...env }, "")

const serving = (env: Record<string, string>, databaseUrl: string) =>
  Layer.effect(
    TestAggregator,
    Effect.gen(function*() {
      const server = yield* HttpServer.HttpServer
      const address = server.address
      if (address._tag !== "TcpAddress") return yield* Effect.die("expected a TCP address")
      return { url: `http://127.0.0.1:${address.port}`, databaseUrl }
    })
  ).pipe(
    Layer.provide(AggregatorLive),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries({ PORT: "0", HOST: "127.0.0.1", ...env })))))
  )

export class TestAggregator extends Effect.Tag("test/TestAggregator")<TestAggregator, Running>() {}

/** The in-process aggregator of `aggregatorLayer`, once `GET /ready` answers 200 (it migrates in the background). */
export const readyAggregator = Effect.tap(TestAggregator, ({ url }) => Effect.promise(() => waitFor(`${url}/ready`)))

/**
 * The aggregator's own routes and middleware served in-process on `NodeHttpServer.layerTest` (a loopback
 * server, with an `HttpClient` pointed at it), over whatever `services` provides (a fake store, say): for
 * tests of the HTTP path that need no database.
 */
export const routesOver = <ROut, E, RIn>(services: Layer.Layer<ROut, E, RIn>) =>
  ServeLive.pipe(
    Layer.provide(ApiMiddlewareLive),
    Layer.provide(ApiLive),
    Layer.provideMerge(NodeHttpServer.layerTest),
    Layer.provideMerge(services)
  )

/** Waits until `GET url` answers 200. */
export const waitFor = async (url: string, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      const res = await fetch(url)
      if (res.status === 200) return
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** A port nothing listens on right now (the OS picks it), for a server the test must know the port of in advance. */
export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const s = net.createServer()
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
    s.on("error", reject)
  })

/**
 * Settings of the caller's shell that would take a spawned program off its defaults (vitest sets MODE=test,
 * which the publisher reads as its sending mode): a spawned program sees only what its test gives it.
 */
const NOT_INHERITED = [
  "DATABASE_URL", "REDIS_URL", "DATA_DIR", "PORT", "HOST", "API_KEYS", "API_KEY", "AGGREGATOR_URL", "EVENTS", "DUPLICATES",
  "MODE", "GROUP_COMMIT", "FLUSH_WINDOW_MS", "FLUSH_MAX_EVENTS", "FLUSH_CONCURRENCY"
]

/** A program of this repository running as its own process. */
export interface Program {
  readonly child: ChildProcess
  /** Everything it wrote to stdout and stderr so far. */
  readonly output: () => string
  /** The exit code (null when a signal ended it). */
  readonly exited: Promise<number | null>
  /** How it ended: the exit code, or the signal that ended it. */
  readonly ended: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
  /** Sends `signal` unless it has exited already (SIGKILL after `graceMs` if that is not enough); resolves to how it ended. */
  readonly stop: (signal?: NodeJS.Signals, graceMs?: number) => Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

export interface Spawned extends Program {
  /** The server's base URL: known at once when a port was given, else once `listening` has resolved. */
  readonly url: string
  /** The URL the server logged it listens on; fails if it exits first or logs nothing within 60 s. */
  readonly listening: Promise<string>
}

const listeningLine = /Listening on (http:\/\/[^\s"]+)/

/** `node dist/<program>` (run `npm run build` first; `npm test` does) on its defaults plus `env`, its output collected. */
export const spawnProgram = (program: string, env: Record<string, string>): Program => {
  const inherited = Object.fromEntries(Object.entries(process.env).filter(([k]) => !NOT_INHERITED.includes(k)))
  const child = spawn(process.execPath, [`dist/${program}`], {
    env: { ...inherited, LOG_LEVEL: "Info", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  const ended = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal }))
  )
  const stop = async (signal: NodeJS.Signals = "SIGTERM", graceMs = 30_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return ended
    child.kill(signal)
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
    const how = await ended
    clearTimeout(timer)
    return how
  }
  return { child, output: () => output, ended, exited: ended.then((e) => e.code), stop }
}

/**
 * `node dist/aggregator` as its own process, for what needs a real one: signals, exit codes, restarts, data
 * directories, several replicas. Port 0 (the default) lets the OS pick a free port, read back from the
 * server's own log line, so parallel test files never race for one.
 */
export const spawnAggregator = (env: Record<string, string>, port = 0): Spawned => {
  const program = spawnProgram("aggregator", { PORT: String(port), HOST: "127.0.0.1", ...env })
  let logged: string | undefined
  const listening = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error("the aggregator did not log its address within 60000 ms")), 60_000)
    const onData = () => {
      const m = listeningLine.exec(program.output())
      if (m !== null) finish(m[1])
    }
    const onExit = (code: number | null) => finish(new Error(`the aggregator exited with ${code} before listening`))
    const finish = (result: string | Error) => {
      clearTimeout(timer)
      program.child.stdout!.off("data", onData)
      program.child.off("exit", onExit)
      if (typeof result === "string") resolve(logged = result)
      else reject(new Error(`${result.message}\n${program.output()}`))
    }
    program.child.stdout!.on("data", onData)
    program.child.once("exit", onExit)
  })
  listening.catch(() => {})
  const known = port === 0 ? undefined : `http://127.0.0.1:${port}`
  return {
    ...program,
    listening,
    get url() {
      const url = known ?? logged
      if (url === undefined) throw new Error("the aggregator's port is not known yet: await `listening` (or startAggregator) first")
      return url
    }
  }
}

/** `spawnAggregator(env)`, returned once `GET /ready` answers 200; stopped (SIGKILL) if it never does. */
export const startAggregator = async (env: Record<string, string>, readyWithinMs = 60_000): Promise<Spawned> => {
  const aggregator = spawnAggregator(env)
  try {
    await waitFor(`${await aggregator.listening}/ready`, readyWithinMs)
  } catch (e) {
    await aggregator.stop("SIGKILL")
    throw new Error(`${(e as Error).message}\n${aggregator.output()}`)
  }
  return aggregator
}

/** `startAggregator` in a scope: stopped with SIGTERM (SIGKILL after 10 s) when the scope closes. */
export const aggregatorProcess = (env: Record<string, string>, readyWithinMs?: number) =>
  Effect.acquireRelease(
    Effect.promise(() => startAggregator(env, readyWithinMs)),
    (aggregator) => Effect.promise(() => aggregator.stop("SIGTERM", 10_000))
  )

/** The derived client (src/client) for the aggregator at `url`, over fetch: for tests that call the API as a client would. */
export const clientOf = (url: string) => makeClient(url).pipe(Effect.provide(FetchHttpClient.layer))

/** `f` with the derived client for `url`, run as a promise: for tests written with async/await. */
export const withClient = <A, E>(url: string, f: (client: Client) => Effect.Effect<A, E>) =>
  Effect.runPromise(Effect.flatMap(clientOf(url), f))

export const postJson = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init
  })

export const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

// this process's own: test files run in parallel processes, and may start within the same millisecond
const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
let counter = 0
/** A name no other test run has used: tests share databases and Redis, so their keys must not collide. */
export const unique = (prefix: string) => `${prefix}-${run}-${counter++}`

/** A valid event; `extra` adds or overrides fields. */
export const event = (topic: string, event_id: string, extra: Record<string, unknown> = {}) => ({
  topic,
  event_id,
  timestamp: "2025-03-04T05:06:07.123456Z",
  ...extra
})
