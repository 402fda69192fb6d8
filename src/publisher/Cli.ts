import { Command, Options } from "@effect/cli"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"

export interface Settings {
  readonly url: string
  readonly apiKey: Option.Option<Redacted.Redacted>
  readonly events: number
  readonly duplicates: number
  readonly topics: number
  readonly mode: "single" | "batch"
  readonly batchSize: number
  /** Batch mode through the hand-written send loop instead of the client library (`src/client/Publisher.ts`). */
  readonly sendLoop: boolean
  /** V8's `--heap-growing-percent` for the run; 0 leaves V8's own heuristic. */
  readonly heapGrowingPercent: number
  readonly concurrency: number
  readonly rate: Option.Option<number>
  readonly seed: Option.Option<number>
  readonly verify: boolean
  readonly json: boolean
  readonly timeout: Duration.Duration
  readonly readyTimeout: Duration.Duration
  readonly maxRetries: number
  readonly spotCheck: number
  /** After the run, how long to keep re-reading `/stats` while its counters are short of the answers. */
  readonly statsSettle: Duration.Duration
  readonly progressInterval: Duration.Duration
  /** Where to write the one-page HTML report; none: no report. */
  readonly report: Option.Option<string>
  /** A summary saved from `--json` to turn into the report instead of running. */
  readonly fromJson: Option.Option<string>
}

/** The settings of this invocation, from flags or, where a flag is absent, the environment. */
export class PublisherSettings extends Context.Tag("Publisher/Settings")<PublisherSettings, Settings>() {}

const check = (flag: string, rule: string, ok: (n: number) => boolean) =>
  Schema.Number.pipe(Schema.filter(ok, {
    message: (issue) => `--${flag} (or its environment variable) must be ${rule}, got ${String(issue.actual)}`
  }))

const integer = (flag: string, env: string, fallback: number, min: number, description: string) =>
  Options.integer(flag).pipe(
    Options.withFallbackConfig(Config.integer(env).pipe(Config.withDefault(fallback))),
    Options.withSchema(check(flag, `an integer ≥ ${min}`, (n) => Number.isInteger(n) && n >= min)),
    Options.withDescription(`${description} Env ${env}; default ${fallback}.`)
  )

const seconds = (flag: string, env: string, fallback: number, description: string) =>
  Options.float(flag).pipe(
    Options.withFallbackConfig(Config.number(env).pipe(Config.withDefault(fallback))),
    Options.withSchema(check(flag, "a positive number of seconds", (n) => n > 0 && Number.isFinite(n))),
    Options.map((s) => Duration.millis(Math.round(s * 1000))),
    Options.withDescription(`${description} Env ${env}; default ${fallback} s.`)
  )

const optional = (
  flag: string,
  option: (name: string) => Options.Options<number>,
  env: string,
  config: (name: string) => Config.Config<number>,
  rule: string,
  ok: (n: number) => boolean,
  description: string
) =>
  option(flag).pipe(
    Options.withSchema(check(flag, rule, ok)),
    Options.optional,
    Options.withFallbackConfig(
      Config.option(config(env).pipe(Config.validate({ message: `${env} must be ${rule}`, validation: ok })))
    ),
    Options.withDescription(description)
  )

const flag = (name: string, env: string, fallback: boolean, description: string, negation?: string) =>
  Options.boolean(name, negation === undefined ? {} : { negationNames: [negation] }).pipe(
    Options.withFallbackConfig(Config.boolean(env).pipe(Config.withDefault(fallback))),
    Options.withDescription(`${description} Env ${env}; default ${fallback ? "on" : "off"}.`)
  )

export const options = {
  url: Options.text("url").pipe(
    Options.withFallbackConfig(Config.string("AGGREGATOR_URL").pipe(Config.withDefault("http://localhost:8080"))),
    Options.withSchema(
      Schema.String.pipe(Schema.filter((s) => URL.canParse(s), {
        message: (issue) => `--url (or AGGREGATOR_URL) must be an absolute URL, got ${String(issue.actual)}`
      }))
    ),
    Options.map((s) => s.replace(/\/+$/, "")),
    Options.withDescription("The aggregator's base URL. Env AGGREGATOR_URL; default http://localhost:8080.")
  ),
  apiKey: Options.redacted("api-key").pipe(
    Options.optional,
    Options.withFallbackConfig(Config.option(Config.redacted("API_KEY"))),
    Options.withDescription(
      "Sent as `Authorization: Bearer <key>` on every request, for an aggregator started with API_KEYS. " +
        "Env API_KEY; default none."
    )
  ),
  events: integer("events", "EVENTS", 20_000, 1, "Events to send, duplicates included."),
  duplicates: Options.float("duplicates").pipe(
    Options.withFallbackConfig(Config.number("DUPLICATES").pipe(Config.withDefault(0.3))),
    Options.withSchema(check("duplicates", "a fraction in [0, 1)", (n) => n >= 0 && n < 1)),
    Options.withDescription(
      "Fraction of the events that are exact re-sends of an event sent earlier. Env DUPLICATES; default 0.3."
    )
  ),
  topics: integer("topics", "TOPICS", 5, 1, "Number of topics the events spread over."),
  mode: Options.choice("mode", ["single", "batch"]).pipe(
    Options.withFallbackConfig(Config.literal("single", "batch")("MODE").pipe(Config.withDefault("single" as const))),
    Options.withDescription(
      "single: one event per POST /publish; batch: POST /publish/batch. Env MODE; default single."
    )
  ),
  batchSize: integer("batch-size", "BATCH_SIZE", 500, 1, "Events per batch in batch mode."),
  sendLoop: flag(
    "send-loop",
    "SEND_LOOP",
    false,
    "In batch mode, send through the hand-written send loop (src/publisher/SendLoop.ts, on src/client/Wire.ts) instead of the client library (src/client/Publisher.ts) — for comparison: it costs about half the CPU an event (see BENCHMARKS.md)."
  ),
  heapGrowingPercent: integer(
    "heap-growing-percent",
    "HEAP_GROWING_PERCENT",
    10,
    0,
    "How far V8 lets the old generation grow past what the last full collection kept, in percent (V8's --heap-growing-percent, set at start-up): a batch run holds each request's body through its round trip, and with V8's own growth those die in the old generation and pile up until a full collection. 0 leaves V8's heuristic."
  ),
  concurrency: integer("concurrency", "CONCURRENCY", 32, 1, "Requests in flight at once."),
  rate: optional(
    "rate",
    Options.float,
    "RATE",
    Config.number,
    "a positive number of events per second",
    (n) => n > 0 && Number.isFinite(n),
    "Cap on events sent per second (first attempts). Env RATE; default no cap."
  ),
  seed: optional(
    "seed",
    Options.integer,
    "SEED",
    Config.integer,
    "a non-negative safe integer",
    (n) => Number.isSafeInteger(n) && n >= 0,
    "Makes the workload reproducible: the same seed sends the same events with the same keys, so a " +
      "second run against the same server is all duplicates. Env SEED; default a fresh random seed."
  ),
  verify: flag(
    "verify",
    "VERIFY",
    true,
    "Compare the server's row count, its /stats counters and a sample of stored events with what was sent; " +
      "exit 1 on a mismatch.",
    "no-verify"
  ),
  json: flag("json", "JSON_SUMMARY", false, "Print the summary as JSON."),
  timeout: seconds("timeout", "REQUEST_TIMEOUT", 10, "Per-attempt request timeout; a timed-out attempt is retried."),
  readyTimeout: seconds("ready-timeout", "READY_TIMEOUT", 60, "How long to wait for GET /ready before giving up."),
  maxRetries: integer(
    "max-retries",
    "MAX_RETRIES",
    10,
    0,
    "Retries per request after a connection error, timeout, 429 or 502/503/504."
  ),
  spotCheck: integer("spot-check", "SPOT_CHECK", 100, 0, "Keys read back with GET /events/{topic}/{event_id}."),
  statsSettle: seconds(
    "stats-settle",
    "STATS_SETTLE",
    5,
    "After the run, how long to keep re-reading /stats while its counters are short of what the server answered " +
      "(behind a load balancer each replica publishes its counters every 2 s)."
  ),
  progressInterval: seconds(
    "progress-interval",
    "PROGRESS_INTERVAL",
    5,
    "Seconds between progress lines when stderr is not a terminal."
  ),
  report: Options.file("report").pipe(
    Options.optional,
    Options.withFallbackConfig(Config.option(Config.string("REPORT_FILE"))),
    Options.map(Option.filter((path) => path.length > 0)),
    Options.withDescription(
      "After the run, write a self-contained one-page HTML report (headline figures, retries, the verification " +
        "checks, latency percentiles and histogram) to this file, whether the run passed or not; its path goes to " +
        "stderr. Env REPORT_FILE; default none."
    )
  ),
  fromJson: Options.file("from-json").pipe(
    Options.optional,
    Options.withDescription(
      "Do not run: read a summary saved from `--json` and write its report to the file given by --report " +
        "(required then). The other flags are ignored. No environment variable, so a stray one cannot turn a " +
        "run into a rendering."
    )
  )
}

/** The command line of the publisher, running `run` with the parsed settings. */
export const makeCommand = <E, R>(run: (settings: Settings) => Effect.Effect<void, E, R>) =>
  Command.make("publisher", options, (parsed) => run(parsed)).pipe(
    Command.withDescription(
      "Load generator for the log aggregator: sends events (a share of them duplicates) over POST /publish or " +
        "/publish/batch, retries what the server could not take, and verifies that every distinct event was " +
        "stored exactly once. The summary goes to stdout, progress to stderr. With --report out.html it also " +
        "writes a one-page HTML report with a latency histogram; `--from-json summary.json --report out.html` " +
        "writes that report from a summary saved with --json, without a run."
    )
  )
