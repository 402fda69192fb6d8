import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { withRequestIds } from "./Observe.js"
import { AggregatorConfig, logLevel } from "./Config.js"
import { ExitDeadlineLive } from "./Lifecycle.js"
import { AggregatorLive } from "./Server.js"

const LoggingLive = Layer.unwrapEffect(
  Effect.map(
    logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info)),
    (level) =>
      Layer.merge(
        Logger.replace(Logger.defaultLogger, Logger.withConsoleLog(withRequestIds(Logger.jsonLogger))),
        Logger.minimumLogLevel(level)
      )
  )
)

AggregatorLive.pipe(
  Layer.merge(ExitDeadlineLive.pipe(Layer.provide(AggregatorConfig.Default))),
  Layer.provide(LoggingLive),
  Layer.launch,
  Effect.annotateLogs("service", "aggregator"),
  NodeRuntime.runMain({ disablePrettyLogger: true })
)
