import { HttpServer } from "@effect/platform"
import { type ChildProcess, spawn } from "node:child_process"
import { ConfigProvider, Effect, Layer } from "effect"
import { AggregatorLive } from "../../src/aggregator/Aggregator.js"
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

export interface Spawned {
  readonly url: string
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Promise<number | null>
}

let nextPort = 20000 + (process.pid % 5000) * 2

/** `node dist/aggregator` as its own process (run `npm run build` first; `npm test` does). */
export const spawnAggregator = (env: Record<string, string>, port = nextPort++): Spawned => {
  let output = ""
  const { DATABASE_URL: _inherited, ...inherited } = process.env
  const child = spawn(process.execPath, ["dist/aggregator"], {
    env: { ...inherited, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "Info", ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  child.stdout!.on("data", (d) => (output += d))
  child.stderr!.on("data", (d) => (output += d))
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  return { url: `http://127.0.0.1:${port}`, child, output: () => output, exited }
}

export const postJson = (url: string, body: unknown, init: RequestInit = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init
  })

export const promise = <A>(f: () => Promise<A>) => Effect.promise(f)

let counter = 0
/** A name no other test run has used: tests share databases and Redis, so their keys must not collide. */
export const unique = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${counter++}`

/** A valid event; `extra` adds or overrides fields. */
export const event = (topic: string, event_id: string, extra: Record<string, unknown> = {}) => ({
  topic,
  event_id,
  timestamp: "2025-03-04T05:06:07.123456Z",
  ...extra
})
