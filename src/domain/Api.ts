import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as OpenApi from "@effect/platform/OpenApi"
import * as Schema from "effect/Schema"
import {
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
  Ready,
  Stats,
  StoredEvent,
  Topic
} from "./Event.js"

export const MAX_LIST_LIMIT = 1000
export const DEFAULT_LIST_LIMIT = 20

const IntFromString = (min: number, max: number) =>
  Schema.NumberFromString.pipe(Schema.int(), Schema.between(min, max))

export const ListParams = Schema.Struct({
  topic: Schema.optionalWith(Topic, { exact: true }),
  limit: Schema.optionalWith(IntFromString(1, MAX_LIST_LIMIT), { exact: true }),
  before: Schema.optionalWith(IntFromString(1, Number.MAX_SAFE_INTEGER), { exact: true })
}).annotations({ parseOptions: { errors: "all" } })

export const StreamParams = Schema.Struct({
  topic: Schema.optionalWith(Topic, { exact: true }).annotations({ description: "Only this topic; all when absent" })
}).annotations({ parseOptions: { errors: "all" } })

// The framework lists its own 400 on every operation (this service answers validation failures with 422),
// and API-level body errors (413, 415) on reads that take no body. Operations that can answer 401 get the
// bearer security scheme.
function withoutFramework400(spec: Record<string, any>): Record<string, any> {
  for (const operations of Object.values(spec.paths ?? {}) as Array<Record<string, any>>) {
    for (const [method, operation] of Object.entries(operations)) {
      const responses = operation?.responses ?? {}
      delete responses["400"]
      if (method === "get") {
        delete responses["413"]
        delete responses["415"]
      }
      if (responses["401"] !== undefined) operation.security = [{ apiKey: [] }]
    }
  }
  spec.components = {
    ...spec.components,
    securitySchemes: {
      ...spec.components?.securitySchemes,
      apiKey: {
        type: "http",
        scheme: "bearer",
        description: "One of the keys in the server's API_KEYS. Needed only when API_KEYS is set."
      }
    }
  }
  return spec
}

export class HealthGroup extends HttpApiGroup.make("health")
  .add(HttpApiEndpoint.get("alive", "/").addSuccess(Alive))
  .add(HttpApiEndpoint.get("ready", "/ready").addSuccess(Ready).addError(NotReady))
  .add(HttpApiEndpoint.get("stats", "/stats").addSuccess(Stats))
{}

export class EventsGroup extends HttpApiGroup.make("events")
  .add(
    HttpApiEndpoint.post("publish", "/publish")
      .setPayload(EventInput)
      .addSuccess(Processed, { status: 201 })
      .addSuccess(DroppedDuplicate, { status: 200 })
      .addError(Unauthorized)
      .addError(Overloaded)
      .addError(StorageUnavailable)
  )
  .add(
    HttpApiEndpoint.post("publishBatch", "/publish/batch")
      .setPayload(BatchInput)
      .addSuccess(BatchResult)
      .addError(Unauthorized)
      .addError(Overloaded)
      .addError(StorageUnavailable)
  )
  .add(
    HttpApiEndpoint.get("list", "/events")
      .setUrlParams(ListParams)
      .addSuccess(Schema.Array(StoredEvent))
      .addError(StorageUnavailable)
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
  )
  .add(
    HttpApiEndpoint.get("get", "/events/:topic/:event_id")
      .setPath(Schema.Struct({ topic: Topic, event_id: EventId }))
      .addSuccess(StoredEvent)
      .addError(NotFound)
      .addError(StorageUnavailable)
  )
{}

export class AggregatorApi extends HttpApi.make("aggregator")
  .add(HealthGroup)
  .add(EventsGroup)
  .addError(ValidationFailed)
  .addError(PayloadTooLarge)
  .addError(UnsupportedMediaType)
  .annotateContext(OpenApi.annotations({
    title: "log-aggregator",
    version: "0.1.0",
    description: "Idempotent event ingestion: every (topic, event_id) is stored exactly once.",
    transform: withoutFramework400
  }))
{}
