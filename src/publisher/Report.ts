import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type { Settings } from "./Cli.js"
import { renderReport } from "./Render.js"
import { Summary } from "./Summary.js"

/** The report could not be read from or written to a file; the message says which and why. */
export class ReportFailed extends Schema.TaggedError<ReportFailed>()("ReportFailed", { message: Schema.String }) {}

const message = (error: { readonly message: string }) => error.message

/** Writes the report of `summary` to `file` and says where on stderr. */
export const writeReport = (file: string, summary: Summary) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const absolute = path.resolve(file)
    yield* fs.writeFileString(absolute, renderReport(summary)).pipe(
      Effect.mapError((e) => new ReportFailed({ message: `could not write the report to ${absolute}: ${message(e)}` }))
    )
    yield* Console.error(`publisher: report written to ${absolute}`)
  })

/** Fails early, before a run, when the report could not be written where asked. */
export const checkReportTarget = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const directory = path.dirname(path.resolve(file))
    const info = yield* Effect.option(fs.stat(directory))
    if (Option.isNone(info) || info.value.type !== "Directory") {
      return yield* new ReportFailed({ message: `--report ${file}: the directory ${directory} does not exist` })
    }
  })

const describeIssues = (error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const shown = issues.slice(0, 8).map((issue) =>
    `  ${issue.path.length === 0 ? "(the whole file)" : issue.path.map(String).join(".")}: ${issue.message}`
  )
  return [...shown, ...(issues.length > shown.length ? [`  … and ${issues.length - shown.length} more`] : [])].join("\n")
}

/** Reads and validates a summary saved from `--json`. */
export const readSummary = (file: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(file).pipe(
      Effect.mapError((e) =>
        new ReportFailed({
          message: `--from-json: cannot read ${file}: ` +
            (e._tag === "SystemError" && e.reason === "NotFound" ? "no such file" : message(e))
        })
      )
    )
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) =>
        new ReportFailed({
          message: `--from-json: ${file} is not JSON (${(e instanceof Error ? e.message : String(e)).replace(/\s+/g, " ")}); ` +
            "it takes a summary saved from `publisher --json`"
        })
    })
    const decoded = Schema.decodeUnknownEither(Summary, { errors: "all" })(json)
    if (Either.isLeft(decoded)) {
      return yield* new ReportFailed({
        message: `--from-json: ${file} is not a publisher summary (the output of \`publisher --json\`):\n` +
          describeIssues(decoded.left)
      })
    }
    return decoded.right
  })

/** `--from-json summary.json --report out.html`: the report of a saved summary, without a run. */
export const reportFromJson = (summaryFile: string, settings: Settings) =>
  Effect.gen(function*() {
    if (Option.isNone(settings.report)) {
      return yield* new ReportFailed({ message: "--from-json needs --report <file.html> (or REPORT_FILE): where to write the report" })
    }
    const summary = yield* readSummary(summaryFile)
    yield* writeReport(settings.report.value, summary)
  })
