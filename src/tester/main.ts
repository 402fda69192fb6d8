import * as Command from "@effect/platform/Command"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { fileURLToPath } from "node:url"
import { TesterConfig } from "./Config.js"

// dist/tester/main.js and src/tester/main.ts both sit two levels below the package root
const packageRoot = fileURLToPath(new URL("../..", import.meta.url))

const runSuite = (extraArgs: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const { aggregatorUrl, apiKey } = yield* TesterConfig
    yield* Option.match(aggregatorUrl, {
      onNone: () => Effect.logInfo("AGGREGATOR_URL is unset: each e2e file starts its own aggregator on a fresh database"),
      onSome: (url) => Effect.logInfo(`running the e2e suite against ${url}`)
    })
    if (Option.isSome(apiKey)) yield* Effect.logInfo("API_KEY is set: publish requests carry it as a bearer key")
    const vitest = Command.make("npx", "--no", "--", "vitest", "run", "test/e2e", ...extraArgs).pipe(
      Command.workingDirectory(packageRoot),
      Command.env({
        ...Option.match(aggregatorUrl, { onNone: () => ({}), onSome: (url) => ({ AGGREGATOR_URL: url }) }),
        ...Option.match(apiKey, { onNone: () => ({}), onSome: (key) => ({ API_KEY: Redacted.value(key) }) })
      }),
      Command.stdin("inherit"),
      Command.stdout("inherit"),
      Command.stderr("inherit")
    )
    const code = yield* Command.exitCode(vitest)
    yield* Effect.logInfo(`vitest exited with ${code}`)
    return code
  })

runSuite(process.argv.slice(2)).pipe(
  Effect.provide([TesterConfig.Default, NodeContext.layer]),
  Effect.annotateLogs("service", "tester"),
  NodeRuntime.runMain({
    teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) ? Number(exit.value) : 1)
  })
)
