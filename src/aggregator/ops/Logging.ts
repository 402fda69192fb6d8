import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import { logLevel } from "../Config.js"
import { withRequestIds } from "../http/Observe.js"

/** JSON lines on stdout, each carrying the request id of the request being handled, at LOG_LEVEL and above. */
export const LoggingLive = Layer.unwrapEffect(
  Effect.map(
    logLevel("LOG_LEVEL").pipe(Config.withDefault(LogLevel.Info)),
    (level) =>
      Layer.merge(
        Logger.replace(Logger.defaultLogger, Logger.withConsoleLog(withRequestIds(Logger.jsonLogger))),
        Logger.minimumLogLevel(level)
      )
  )
)
