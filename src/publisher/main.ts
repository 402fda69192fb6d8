import { Command, ValidationError } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { makeCommand } from "./Cli.js"
import { ReportFailed, reportFromJson } from "./Report.js"
import { VERSION } from "../domain/Version.js"
import { PublishFailed, publish } from "./Run.js"

const cli = Command.run(
  makeCommand((settings) =>
    Option.match(settings.fromJson, {
      onNone: () => publish(settings),
      onSome: (file) => reportFromJson(file, settings)
    })
  ),
  { name: "publisher", version: VERSION }
)

// @effect/cli prints its own usage errors; a PublishFailed follows a printed summary.
const report = (cause: Cause.Cause<unknown>) => {
  if (Cause.isInterruptedOnly(cause)) return Effect.void
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && ValidationError.isValidationError(failure.value)) return Effect.void
  if (Option.isSome(failure) && (failure.value instanceof PublishFailed || failure.value instanceof ReportFailed)) {
    return Console.error(`publisher: ${failure.value.message}`)
  }
  return Console.error(Cause.pretty(cause))
}

cli(process.argv).pipe(
  Effect.tapErrorCause(report),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
