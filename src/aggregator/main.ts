import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Config, Effect, Layer, Logger, LogLevel } from "effect"
import { AggregatorLive } from "./Server.js"

const LoggingLive = Layer.unwrapEffect(
  Effect.map(
    Config.logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info)),
    (level) => Layer.merge(Logger.json, Logger.minimumLogLevel(level))
  )
)

AggregatorLive.pipe(
  Layer.provide(LoggingLive),
  Layer.launch,
  Effect.annotateLogs("service", "aggregator"),
  NodeRuntime.runMain({ disablePrettyLogger: true })
)
