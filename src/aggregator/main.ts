import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { AggregatorLive } from "./Aggregator.js"
import { AggregatorConfig } from "./Config.js"
import { ExitDeadlineLive } from "./ops/Lifecycle.js"
import { LoggingLive } from "./ops/Logging.js"

AggregatorLive.pipe(
  Layer.merge(ExitDeadlineLive.pipe(Layer.provide(AggregatorConfig.Default))),
  Layer.provide(LoggingLive),
  Layer.launch,
  Effect.annotateLogs("service", "aggregator"),
  NodeRuntime.runMain({ disablePrettyLogger: true })
)
