import * as Command from "@effect/platform/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { AggregatorConfig } from "../aggregator/Config.js"

// The whole system in one command: the aggregator on its embedded defaults (PGlite in DATA_DIR, in-process
// broker) unless DATABASE_URL says otherwise, the publisher's default load run against it, and then the
// aggregator left running for the user to explore. Ctrl-C stops it cleanly (the scope sends it SIGTERM and
// waits for it to drain). Both children inherit this process's environment, so the aggregator's and the
// publisher's settings (PORT, DATA_DIR, EVENTS, …) apply to them as they would alone.

const dist = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")

/** `node dist/<program>`, inheriting this process's environment plus `env`, printing to this terminal. */
const program = (name: string, args: ReadonlyArray<string>, env: Record<string, string>) =>
  Command.make(process.execPath, Path.join(dist, name), ...args).pipe(
    Command.env(env),
    Command.stdout("inherit"),
    Command.stderr("inherit")
  )

const demo = Effect.gen(function*() {
  const config = yield* AggregatorConfig
  const logLevel = yield* Config.string("LOG_LEVEL").pipe(Config.withDefault("Warn"))
  // the publisher's own defaults, only to say which load it runs
  const events = yield* Config.integer("EVENTS").pipe(Config.withDefault(20_000))
  const duplicates = yield* Config.number("DUPLICATES").pipe(Config.withDefault(0.3))
  const url = `http://localhost:${config.port}`
  const storage = Option.isSome(config.databaseUrl)
    ? { where: "PostgreSQL from DATABASE_URL", keeps: "data stays in the DATABASE_URL database" }
    : config.dataDir.startsWith("memory://")
    ? { where: `embedded PostgreSQL in memory (DATA_DIR=${config.dataDir})`, keeps: "its data goes with it" }
    : {
      where: `embedded PostgreSQL in ${config.dataDir}`,
      keeps: `data stays in ${config.dataDir} (npm run reset deletes it${
        config.dataDir === "./data" ? "" : `, given the same DATA_DIR`
      })`
    }

  const aggregator = yield* Command.start(
    program("aggregator", [], { PORT: String(config.port), LOG_LEVEL: logLevel })
  )
  yield* Effect.log(`starting the aggregator on ${url} (${storage.where})`)
  const aggregatorExit = aggregator.exitCode.pipe(Effect.either)

  yield* Effect.tryPromise(() => fetch(`${url}/ready`).then((r) => r.ok ? r : Promise.reject(new Error(String(r.status))))).pipe(
    Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.upTo("120 seconds"))),
    Effect.raceFirst(Effect.flatMap(aggregatorExit, (code) => Effect.dieMessage(`the aggregator exited (${JSON.stringify(code)}) before it was ready`))),
    Effect.orDieWith(() => new Error(`the aggregator did not become ready at ${url}/ready`))
  )

  const flags = process.argv.slice(2)
  yield* Effect.log(
    `running the publisher ${
      flags.length === 0
        ? `with ${events.toLocaleString("en-US")} events, ${Math.round(duplicates * 100)}% duplicates`
        : `with ${flags.join(" ")}`
    } — watch it live at ${url}/dashboard`
  )
  const code = yield* Command.exitCode(program("publisher", flags, { AGGREGATOR_URL: url }))
  if (code !== 0) yield* Effect.logWarning(`the publisher exited with ${code}`)

  yield* Effect.log(
    `the aggregator keeps running at ${url} — try ${url}/dashboard, ${url}/stats, ${url}/events?limit=5, ${url}/metrics, ${url}/docs. Ctrl-C stops it; ${storage.keeps}.`
  )
  const stopped = yield* aggregatorExit
  yield* Effect.logWarning(`the aggregator stopped (${JSON.stringify(stopped)})`)
})

demo.pipe(Effect.scoped, Effect.provide([AggregatorConfig.Default, NodeContext.layer]), NodeRuntime.runMain)
