import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Schema from "effect/Schema"
import { VERSION } from "./Version.js"
import {
  MethodNotAllowed,
  NotFound,
  NotReady,
  Overloaded,
  PayloadTooLarge,
  StorageUnavailable,
  Unauthorized,
  UnsupportedMediaType,
  ValidationFailed
} from "./Errors.js"
import {
  Alive,
  BatchInput,
  BatchResult,
  DroppedDuplicate,
  EventId,
  EventInput,
  Processed,
  parseTimestamp,
  Ready,
  Source,
  Stats,
  StoredEvent,
  Topic,
  TopicSummary
} from "./Event.js"

export const MAX_LIST_LIMIT = 1000
export const DEFAULT_LIST_LIMIT = 20

const IntFromString = (min: number, max: number) =>
  Schema.NumberFromString.pipe(Schema.int(), Schema.between(min, max))

/** An ISO-8601 date-time bound on the events' `timestamp`, decoded to its UTC form. */
const TimeBound = (name: string, description: string) =>
  Schema.transform(
    Schema.String.pipe(
      Schema.filter((s) => {
        const parsed = parseTimestamp(s)
        return "error" in parsed ? parsed.error.replace(/^timestamp/, name) : true
      }, { jsonSchema: { format: "date-time" } })
    ),
    Schema.String,
    {
      strict: true,
      decode: (s) => {
        const parsed = parseTimestamp(s)
        return "error" in parsed ? s : parsed.utcIso
      },
      encode: (s) => s
    }
  ).annotations({ description, examples: ["2025-01-31T12:00:00Z"] })

const filterFields = {
  topic: Schema.optionalWith(Topic, { exact: true }),
  source: Schema.optionalWith(Source, { exact: true }).annotations({ description: "Only events from this source" }),
  since: Schema.optionalWith(TimeBound("since", "Only events whose `timestamp` is at or after this instant"), { exact: true }),
  until: Schema.optionalWith(TimeBound("until", "Only events whose `timestamp` is before this instant"), { exact: true })
}

// `since` must come before `until`: an empty range is a mistake to report, not a page to answer.
const ordered = (p: { readonly since?: string; readonly until?: string }) =>
  p.since === undefined || p.until === undefined || Date.parse(p.since) < Date.parse(p.until) ||
  { path: ["until"], message: "until must be later than since" }

export const ListParams = Schema.Struct({
  ...filterFields,
  limit: Schema.optionalWith(IntFromString(1, MAX_LIST_LIMIT), { exact: true }),
  before: Schema.optionalWith(IntFromString(1, Number.MAX_SAFE_INTEGER), { exact: true })
}).pipe(Schema.filter(ordered)).annotations({ parseOptions: { errors: "all" } })

export const ExportParams = Schema.Struct(filterFields).pipe(Schema.filter(ordered)).annotations({
  parseOptions: { errors: "all" }
})

export const StreamParams = Schema.Struct({
  topic: Schema.optionalWith(Topic, { exact: true }).annotations({ description: "Only this topic; all when absent" })
}).annotations({ parseOptions: { errors: "all" } })

/** One example of each error body, encoded by the error's own schema (so it cannot drift from it). */
export const errorExamples: Record<string, unknown> = {
  ValidationFailed: Schema.encodeSync(ValidationFailed)(
    new ValidationFailed({
      message: "the event is invalid",
      issues: [{ path: "timestamp", message: "timestamp must be an ISO 8601 date-time" }]
    })
  ),
  PayloadTooLarge: Schema.encodeSync(PayloadTooLarge)(
    new PayloadTooLarge({ message: "the body is larger than 1048576 bytes", limit: 1048576 })
  ),
  UnsupportedMediaType: Schema.encodeSync(UnsupportedMediaType)(
    new UnsupportedMediaType({ message: "content type text/plain is not accepted; send application/json" })
  ),
  MethodNotAllowed: Schema.encodeSync(MethodNotAllowed)(
    new MethodNotAllowed({ message: "GET is not allowed on /publish; use POST" })
  ),
  Unauthorized: Schema.encodeSync(Unauthorized)(
    new Unauthorized({ message: "this route needs an API key: send `Authorization: Bearer <key>`" })
  ),
  NotFound: Schema.encodeSync(NotFound)(new NotFound({ message: "no event evt-9 in topic orders" })),
  Overloaded: Schema.encodeSync(Overloaded)(
    new Overloaded({ message: "too many events are waiting to be written; retry later" })
  ),
  StorageUnavailable: Schema.encodeSync(StorageUnavailable)(
    new StorageUnavailable({ message: "storage is unavailable; retry later" })
  ),
  NotReady: Schema.encodeSync(NotReady)(new NotReady({ reason: "connect ECONNREFUSED 127.0.0.1:5432" }))
}

const retryAfterHeader = {
  "Retry-After": { description: "Seconds to wait before retrying", schema: { type: "integer" } }
}

// The framework lists its own 400 on every operation (this service answers validation failures with 422),
// and API-level body errors (413, 415) on reads that take no body. Operations that can answer 401 get the
// bearer security scheme; 405s name the allowed methods in `Allow`, 429s and 503s carry `Retry-After`.
// Error schemas get an example each; the framework's own decode-error schemas, now unused, are dropped.
function documentResponses(spec: Record<string, any>): Record<string, any> {
  for (const operations of Object.values(spec.paths ?? {}) as Array<Record<string, any>>) {
    for (const [method, operation] of Object.entries(operations)) {
      const responses = operation?.responses ?? {}
      delete responses["400"]
      if (method === "get") {
        delete responses["413"]
        delete responses["415"]
      }
      // the event reads need a key only with READS_NEED_KEY on: for them the key is optional
      if (responses["401"] !== undefined) operation.security = method === "get" ? [{}, { apiKey: [] }] : [{ apiKey: [] }]
      if (responses["405"] !== undefined) {
        responses["405"].headers = { Allow: { description: "The methods this path takes", schema: { type: "string" } } }
      }
      for (const status of ["429", "503"]) {
        if (responses[status] !== undefined) responses[status].headers = retryAfterHeader
      }
    }
  }
  const schemas: Record<string, any> = { ...spec.components?.schemas }
  for (const [name, example] of Object.entries(errorExamples)) {
    if (schemas[name] !== undefined) schemas[name] = { ...schemas[name], examples: [example] }
  }
  for (const name of ["HttpApiDecodeError", "Issue", "PropertyKey"]) {
    const { [name]: dropped, ...rest } = schemas
    if (dropped !== undefined && !JSON.stringify({ ...spec, components: { schemas: rest } }).includes(`"#/components/schemas/${name}"`)) {
      delete schemas[name]
    }
  }
  spec.components = {
    ...spec.components,
    schemas,
    securitySchemes: {
      ...spec.components?.securitySchemes,
      apiKey: {
        type: "http",
        scheme: "bearer",
        description: "One of the keys in the server's API_KEYS. Needed only when API_KEYS is set, and on the event " +
          "reads only when READS_NEED_KEY is also on."
      }
    }
  }
  return spec
}

/**
 * The bearer check on the routes that write and on the event reads. With no API keys configured it lets
 * everything through; with keys, a write without one of them is a 401 before its body is read, and so is an
 * event read when READS_NEED_KEY is on.
 */
export class Authorization extends HttpApiMiddleware.Tag<Authorization>()("Authorization", {
  failure: Unauthorized,
  security: { apiKey: HttpApiSecurity.bearer }
}) {}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("alive", "/").addSuccess(Alive))
  .add(HttpApiEndpoint.get("ready", "/ready").addSuccess(Ready).addError(NotReady))
  .add(HttpApiEndpoint.get("stats", "/stats").addSuccess(Stats))
{}

export class OperationsGroup extends HttpApiGroup.make("operations")
  .add(
    HttpApiEndpoint.get("metrics", "/metrics").addSuccess(
      HttpApiSchema.Text({ contentType: "text/plain; version=0.0.4; charset=utf-8" }).annotations({
        description: "Prometheus text exposition format: this replica's counters, histograms and gauges, " +
          "all named `aggregator_*`, without per-topic labels."
      })
    )
  )
  .add(
    HttpApiEndpoint.get("dashboard", "/dashboard").addSuccess(
      HttpApiSchema.Text({ contentType: "text/html; charset=utf-8" }).annotations({
        description: "A self-contained live dashboard: events/s, duplicate rate, totals and the newest events."
      })
    )
  )
{}

export class EventsGroup extends HttpApiGroup.make("events")
  .add(
    HttpApiEndpoint.post("publish", "/publish")
      .setPayload(EventInput)
      .addSuccess(Processed, { status: 201 })
      .addSuccess(DroppedDuplicate, { status: 200 })
      .addError(Overloaded)
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.post("publishBatch", "/publish/batch")
      .setPayload(BatchInput)
      .addSuccess(BatchResult)
      .addError(Overloaded)
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.get("list", "/events")
      .setUrlParams(ListParams)
      .addSuccess(Schema.Array(StoredEvent).annotations({ description: "Stored events, newest first" }))
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.get("export", "/events/export")
      .setUrlParams(ExportParams)
      .addSuccess(
        HttpApiSchema.Text({ contentType: "application/x-ndjson" }).annotations({
          description: "Every matching event, oldest first, one StoredEvent JSON a line (NDJSON), streamed in " +
            "chunks of about LIST_MAX_BYTES with constant memory whatever the count."
        })
      )
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.get("topics", "/topics")
      .addSuccess(Schema.Array(TopicSummary).annotations({ description: "Every topic with stored events, in topic order" }))
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.get("stream", "/events/stream")
      .setUrlParams(StreamParams)
      .addSuccess(
        HttpApiSchema.Text({ contentType: "text/event-stream" }).annotations({
          description: "Server-Sent Events: each newly stored event (on any replica) as `id: <seq>` and " +
            "`data: <StoredEvent JSON>`; `:` comment lines as heartbeats. A client that falls behind is disconnected."
        })
      )
      .addError(Overloaded)
      .middleware(Authorization)
  )
  .add(
    HttpApiEndpoint.get("get", "/events/:topic/:event_id")
      .setPath(Schema.Struct({ topic: Topic, event_id: EventId }))
      .addSuccess(StoredEvent)
      .addError(NotFound)
      .addError(StorageUnavailable)
      .middleware(Authorization)
  )
{}

export class AggregatorApi extends HttpApi.make("aggregator")
  .add(HealthGroup)
  .add(EventsGroup)
  .add(OperationsGroup)
  .addError(ValidationFailed)
  .addError(PayloadTooLarge)
  .addError(UnsupportedMediaType)
  .addError(MethodNotAllowed)
  .annotateContext(OpenApi.annotations({
    title: "log-aggregator",
    version: VERSION,
    description: "Idempotent event ingestion: every (topic, event_id) is stored exactly once.",
    transform: documentResponses
  }))
{}
