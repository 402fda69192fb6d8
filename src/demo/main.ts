import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import { type ChildProcess, spawn } from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

// The whole system in one command: the aggregator on its embedded defaults (PGlite in ./data, in-process
// broker) unless DATABASE_URL says otherwise, the publisher's default load run against it, and then the
// aggregator left running for the user to explore. Ctrl-C stops it cleanly.

const dist = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

const exited = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    if (child.exitCode !== null) return resume(Effect.succeed(child.exitCode))
    child.once("exit", (code) => resume(Effect.succeed(code)))
  })

const program = Effect.gen(function*() {
  const port = yield* Config.integer("PORT").pipe(Config.withDefault(8080))
  const databaseUrl = yield* Config.option(Config.redacted("DATABASE_URL"))
  const logLevel = yield* Config.string("LOG_LEVEL").pipe(Config.withDefault("Warn"))
  const url = `http://localhost:${port}`

  const aggregator = yield* Effect.acquireRelease(
    Effect.sync(() =>
      spawn(process.execPath, [Path.join(dist, "aggregator")], {
        env: { ...process.env, PORT: String(port), LOG_LEVEL: logLevel },
        stdio: ["ignore", "inherit", "inherit"]
      })
    ),
    (child) =>
      Effect.gen(function*() {
        if (child.exitCode !== null) return
        child.kill("SIGTERM")
        yield* exited(child)
      })
  )
  yield* Effect.log(
    databaseUrl._tag === "Some"
      ? `starting the aggregator on ${url} (PostgreSQL from DATABASE_URL)`
      : `starting the aggregator on ${url} (embedded PostgreSQL in ./data; the first start takes a few seconds)`
  )

  yield* Effect.tryPromise(() => fetch(`${url}/ready`).then((r) => r.ok ? r : Promise.reject(new Error(String(r.status))))).pipe(
    Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.upTo("120 seconds"))),
    Effect.raceFirst(Effect.flatMap(exited(aggregator), (code) => Effect.dieMessage(`the aggregator exited (${code}) before it was ready`))),
    Effect.orDieWith(() => new Error(`the aggregator did not become ready at ${url}/ready`))
  )

  yield* Effect.log("running the publisher's default load: 20,000 events, 30% duplicates")
  const publisher = spawn(process.execPath, [Path.join(dist, "publisher"), ...process.argv.slice(2)], {
    env: { ...process.env, AGGREGATOR_URL: url },
    stdio: ["ignore", "inherit", "inherit"]
  })
  const code = yield* exited(publisher)
  if (code !== 0) yield* Effect.logWarning(`the publisher exited with ${code}`)

  yield* Effect.log(
    `the aggregator keeps running at ${url} — try ${url}/stats, ${url}/events?limit=5. Ctrl-C stops it; data stays in ./data (npm run reset clears it).`
  )
  const stopped = yield* exited(aggregator)
  yield* Effect.logWarning(`the aggregator stopped (${stopped})`)
})

program.pipe(Effect.scoped, NodeRuntime.runMain)
