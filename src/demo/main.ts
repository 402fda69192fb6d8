import * as Command from "@effect/platform/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

// The whole system in one command: the aggregator on its embedded defaults (PGlite in ./data, in-process
// broker) unless DATABASE_URL says otherwise, the publisher's default load run against it, and then the
// aggregator left running for the user to explore. Ctrl-C stops it cleanly (the scope sends it SIGTERM and
// waits for it to drain).

const dist = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

/** `node dist/<program>`, inheriting this process's environment plus `env`, printing to this terminal. */
const program = (name: string, args: ReadonlyArray<string>, env: Record<string, string>) =>
  Command.make(process.execPath, Path.join(dist, name), ...args).pipe(
    Command.env(env),
    Command.stdout("inherit"),
    Command.stderr("inherit")
  )

const demo = Effect.gen(function*() {
  const port = yield* Config.integer("PORT").pipe(Config.withDefault(8080))
  const databaseUrl = yield* Config.option(Config.redacted("DATABASE_URL"))
  const logLevel = yield* Config.string("LOG_LEVEL").pipe(Config.withDefault("Warn"))
  const url = `http://localhost:${port}`

  const aggregator = yield* Command.start(program("aggregator", [], { PORT: String(port), LOG_LEVEL: logLevel }))
  yield* Effect.log(
    databaseUrl._tag === "Some"
      ? `starting the aggregator on ${url} (PostgreSQL from DATABASE_URL)`
      : `starting the aggregator on ${url} (embedded PostgreSQL in ./data; the first start takes a few seconds)`
  )
  const aggregatorExit = aggregator.exitCode.pipe(Effect.either)

  yield* Effect.tryPromise(() => fetch(`${url}/ready`).then((r) => r.ok ? r : Promise.reject(new Error(String(r.status))))).pipe(
    Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.upTo("120 seconds"))),
    Effect.raceFirst(Effect.flatMap(aggregatorExit, (code) => Effect.dieMessage(`the aggregator exited (${JSON.stringify(code)}) before it was ready`))),
    Effect.orDieWith(() => new Error(`the aggregator did not become ready at ${url}/ready`))
  )

  const flags = process.argv.slice(2)
  yield* Effect.log(
    `running the publisher ${
      flags.length === 0 ? "with its default load: 20,000 events, 30% duplicates" : `with ${flags.join(" ")}`
    } — watch it live at ${url}/dashboard`
  )
  const code = yield* Command.exitCode(program("publisher", flags, { AGGREGATOR_URL: url }))
  if (code !== 0) yield* Effect.logWarning(`the publisher exited with ${code}`)

  yield* Effect.log(
    `the aggregator keeps running at ${url} — try ${url}/dashboard, ${url}/stats, ${url}/events?limit=5, ${url}/metrics, ${url}/docs. Ctrl-C stops it; data stays in ./data (npm run reset clears it).`
  )
  const stopped = yield* aggregatorExit
  yield* Effect.logWarning(`the aggregator stopped (${JSON.stringify(stopped)})`)
})

demo.pipe(Effect.scoped, Effect.provide(NodeContext.layer), NodeRuntime.runMain)
