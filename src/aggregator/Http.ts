import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { createHash, timingSafeEqual } from "node:crypto"
import { AggregatorApi, Authorization, DEFAULT_LIST_LIMIT } from "../domain/Api.js"
import {
  MethodNotAllowed,
  NotFound,
  Overloaded,
  PayloadTooLarge,
  StorageUnavailable,
  Unauthorized,
  UnsupportedMediaType,
  ValidationFailed
} from "../domain/Errors.js"
import type { BatchItemResult } from "../domain/Event.js"
import { VERSION } from "../domain/Version.js"
import { ClientGone, readJsonBody } from "./Body.js"
import { Broker } from "./Broker.js"
import { AggregatorConfig } from "./Config.js"
import { Draining } from "./Lifecycle.js"
import { Database } from "./Database.js"
import { Batcher } from "./Batcher.js"
import { eventKey, EventStore, type NewEvent } from "./EventStore.js"
import { Stats } from "./Stats.js"
import { allowedMethods, isDeclaredPath, pathOf } from "./Routes.js"
import { batchItems, GUARDED_DEPTH, validateItem } from "./Validation.js"
import { dashboardPage } from "./Dashboard.js"
import * as Metrics from "./Metrics.js"

export const HealthLive = HttpApiBuilder.group(AggregatorApi, "health", (handlers) =>
  Effect.gen(function*() {
    const db = yield* Database
    const store = yield* EventStore
    const stats = yield* Stats
    const broker = yield* Broker
    return handlers
      .handle("alive", () =>
        Effect.map(stats.uptimeSeconds, (uptime_seconds) => ({
          status: "alive" as const,
          service: "aggregator",
          version: VERSION,
          uptime_seconds
        })))
      .handle("ready", () => db.readiness)
      .handle("stats", () =>
        Effect.gen(function*() {
          const [uptime_stats, total, storage_failures, uptime_seconds, announcements, stream_clients, cluster] =
            yield* Effect.all([
              stats.snapshot,
              Effect.option(store.totalRows),
              stats.storageFailures,
              stats.uptimeSeconds,
              broker.announcements,
              broker.streamClients,
              broker.cluster
            ], { concurrency: "unbounded" })
          return {
            uptime_stats,
            database_total_rows: Option.getOrNull(total),
            storage_failures,
            uptime_seconds,
            started_at: stats.startedAt.toISOString(),
            service: "aggregator",
            announcements,
            stream_clients,
            cluster
          }
        }))
  }))

export const OperationsLive = HttpApiBuilder.group(AggregatorApi, "operations", (handlers) =>
  Effect.gen(function*() {
    const db = yield* Database
    const stats = yield* Stats
    const broker = yield* Broker
    const batcher = yield* Batcher
    // Gauges are read when scraped; counters and histograms move where their events happen.
    const readGauges = Effect.gen(function*() {
      yield* Metric.set(Metrics.pendingEvents, yield* batcher.pendingEvents)
      yield* Metric.set(Metrics.streamClients, yield* broker.streamClients)
      yield* Metric.set(Metrics.uptime, yield* stats.uptimeSeconds)
      yield* Metric.set(Metrics.residentMemory, process.memoryUsage.rss())
      const pool = yield* db.poolUse
      if (Option.isSome(pool)) {
        yield* Metric.set(Metrics.poolInUse, pool.value.inUse)
        yield* Metric.set(Metrics.poolIdle, pool.value.idle)
        yield* Metric.set(Metrics.poolMax, pool.value.max)
        if (pool.value.waiting !== undefined) yield* Metric.set(Metrics.poolWaiting, pool.value.waiting)
      }
    })
    return handlers
      .handleRaw("metrics", () =>
        readGauges.pipe(
          Effect.zipRight(Metrics.prometheusText),
          Effect.map((text) =>
            HttpServerResponse.text(text, {
              contentType: "text/plain; version=0.0.4; charset=utf-8",
              headers: { "cache-control": "no-store" }
            })
          )
        ))
      .handleRaw("dashboard", () =>
        Effect.succeed(HttpServerResponse.text(dashboardPage, {
          contentType: "text/html; charset=utf-8",
          headers: {
            "cache-control": "no-store",
            // everything the page needs is inline or from this origin
            "content-security-policy":
              "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            "x-content-type-options": "nosniff"
          }
        })))
  }))

const field = (item: unknown, name: string): string | null => {
  if (typeof item !== "object" || item === null) return null
  const v = (item as Record<string, unknown>)[name]
  return typeof v === "string" ? v : null
}

const invalid = (issues: ReadonlyArray<{ readonly path: string; readonly message: string }>, what = "the request") =>
  new ValidationFailed({ message: `${what} is invalid (${issues.length} issue${issues.length === 1 ? "" : "s"})`, issues })

/**
 * The ingest routes are served with `handleRaw`: the body is read and parsed once, validated by one compiled
 * decoder, and the answer is built here, while the HttpApi definition stays the contract (OpenAPI, client).
 */
export const EventsLive = HttpApiBuilder.group(AggregatorApi, "events", (handlers) =>
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const batcher = yield* Batcher
    const stats = yield* Stats
    const broker = yield* Broker

    const storedOne = { processed: 1, duplicates: 0, rejected: 0 } as const
    const duplicateOne = { processed: 0, duplicates: 1, rejected: 0 } as const
    const rejectedOne = { processed: 0, duplicates: 0, rejected: 1 } as const
    // a body cut off by the client going away is no event, and nobody reads this answer
    const clientGone = HttpServerResponse.empty({ status: 499 })

    const readBody = (request: HttpServerRequest.HttpServerRequest) =>
      readJsonBody(request, config.maxBodyBytes, config.acceptUntypedBodies)

    const write = (events: ReadonlyArray<NewEvent>) =>
      batcher.submit(events).pipe(
        Effect.tapErrorTag("StorageUnavailable", () => stats.recordStorageFailure(events.length))
      )

    // A refused single event counts as one rejected event, whatever refused it (body or fields).
    type Answer = Effect.Effect<
      HttpServerResponse.HttpServerResponse,
      ValidationFailed | PayloadTooLarge | UnsupportedMediaType | Overloaded | StorageUnavailable
    >
    const publishOne = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(
        Effect.catchAll(readBody(request), (e) => e instanceof ClientGone ? Effect.succeed(undefined) : Effect.zipRight(stats.record(rejectedOne), Effect.fail(e))),
        (body): Answer => {
          if (body === undefined) return Effect.succeed(clientGone)
          const checked = validateItem(body.value, config.maxPayloadBytes, body.depth > GUARDED_DEPTH)
          if (Either.isLeft(checked)) return Effect.zipRight(stats.record(rejectedOne), Effect.fail(invalid(checked.left)))
          const event = checked.right
          return Effect.flatMap(write([event]), ([row]) =>
            Effect.as(
              stats.record(row !== undefined ? storedOne : duplicateOne),
              HttpServerResponse.unsafeJson(
                { status: row !== undefined ? "processed" : "dropped_duplicate", id: event.event_id, topic: event.topic },
                { status: row !== undefined ? 201 : 200 }
              )
            ))
        }
      )

    // Each valid item is written once per key (its first occurrence); later repeats are duplicates.
    const publishBatch = (request: HttpServerRequest.HttpServerRequest): Answer =>
      Effect.flatMap(Effect.catchTag(readBody(request), "ClientGone", () => Effect.succeed(undefined)), (body): Answer => {
        if (body === undefined) return Effect.succeed(clientGone)
        const deep = body.depth > GUARDED_DEPTH
        const envelope = batchItems(body.value, deep)
        if (Either.isLeft(envelope)) return Effect.fail(invalid(envelope.left))
        const items = envelope.right
        if (items.length > config.maxBatchEvents) {
          return Effect.fail(
            new PayloadTooLarge({ message: `a batch may hold at most ${config.maxBatchEvents} events; split it`, limit: config.maxBatchEvents })
          )
        }
        const checked = items.map((item) => validateItem(item, config.maxPayloadBytes, deep))
        const firstOf = new Map<string, number>()
        const toWrite: Array<NewEvent> = []
        const slot = checked.map((c) => {
          if (Either.isLeft(c)) return -1
          const key = eventKey(c.right.topic, c.right.event_id)
          if (firstOf.has(key)) return -2
          firstOf.set(key, toWrite.length)
          toWrite.push(c.right)
          return toWrite.length - 1
        })
        return Effect.flatMap(write(toWrite), (rows) => {
          let processed = 0, duplicates = 0, rejected = 0
          const results = checked.map((c, index): BatchItemResult => {
            if (Either.isLeft(c)) {
              rejected++
              return { index, topic: field(items[index], "topic"), event_id: field(items[index], "event_id"), status: "rejected", errors: c.left }
            }
            const stored = slot[index] >= 0 && rows[slot[index]] !== undefined
            if (stored) processed++
            else duplicates++
            return { index, topic: c.right.topic, event_id: c.right.event_id, status: stored ? "processed" : "dropped_duplicate" }
          })
          return Effect.as(
            stats.record({ processed, duplicates, rejected }),
            HttpServerResponse.unsafeJson({ received: items.length, processed, duplicates, rejected, results })
          )
        })
      })

    return handlers
      .handleRaw("publish", ({ request }) => publishOne(request), { uninterruptible: true })
      .handleRaw("publishBatch", ({ request }) => publishBatch(request), { uninterruptible: true })
      // At most about LIST_MAX_BYTES a response; `X-Next-Before` carries the cursor whenever older events may follow.
      .handle("list", ({ request, urlParams }) =>
        Effect.map(
          store.page({
            limit: urlParams.limit ?? DEFAULT_LIST_LIMIT,
            maxBytes: config.listMaxBytes,
            ...(urlParams.topic !== undefined ? { topic: urlParams.topic } : {}),
            ...(urlParams.before !== undefined ? { before: urlParams.before } : {})
          }),
          ({ events, more }) => {
            if (more) NodeHttpServerRequest.toServerResponse(request).setHeader("x-next-before", String(events[events.length - 1].seq))
            return events
          }
        ))
      .handleRaw("stream", ({ request, urlParams }) =>
        // Subscribed before the answer starts, so nothing stored after its first line is missed; one past
        // STREAM_MAX_CLIENTS gets a 429. The body is a Node stream the server pipes into the response.
        Effect.map(broker.subscribe(urlParams.topic), (tail) => {
          const response = NodeHttpServerRequest.toServerResponse(request)
          if (response.destroyed) tail.destroy()
          else response.once("close", () => tail.destroy())
          return HttpServerResponse.raw(tail, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })
        }))
      .handle("get", ({ path }) =>
        Effect.flatMap(store.get(path.topic, path.event_id), (event) =>
          event === undefined
            ? Effect.fail(new NotFound({ message: `no event ${path.event_id} in topic ${path.topic}` }))
            : Effect.succeed(event)))
  }))

const readOnly = new Set(["GET", "HEAD", "OPTIONS"])

const sha256 = (text: string) => createHash("sha256").update(text).digest()

/**
 * Whether an `Authorization` header carries one of `keys` as a bearer token. Digests have equal lengths,
 * so `timingSafeEqual` applies whatever the key lengths, and every key is compared: the time taken does
 * not depend on which key matched or how much of one did. The header is read whole (the scheme in any
 * case, spaces around the token), not only the part the framework's bearer decoding slices off.
 */
const bearerCheck = (keys: ReadonlyArray<Redacted.Redacted<string>>) => {
  const digests = keys.map((key) => sha256(Redacted.value(key)))
  return (authorization: string | undefined): boolean => {
    const token = authorization === undefined ? undefined : /^\s*Bearer +(\S+) *$/i.exec(authorization)?.[1]
    if (token === undefined) return false
    const presented = sha256(token)
    let ok = false
    for (const digest of digests) ok = timingSafeEqual(digest, presented) || ok
    return ok
  }
}

/**
 * The bearer check: the `Authorization` middleware (with `HttpApiSecurity.bearer`) of the routes that write,
 * and of the event reads when READS_NEED_KEY is on.
 */
export const AuthorizationLive = Layer.effect(
  Authorization,
  Effect.map(AggregatorConfig, (config) => {
    if (config.apiKeys.length === 0) return Authorization.of({ apiKey: () => Effect.void })
    const valid = bearerCheck(config.apiKeys)
    return Authorization.of({
      apiKey: () =>
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
          if (!config.readsNeedKey && readOnly.has(request.method)) return Effect.void
          if (valid(request.headers["authorization"])) return Effect.void
          const missing = (request.headers["authorization"] ?? "").trim() === ""
          return Effect.fail(
            new Unauthorized({
              message: missing
                ? "this route needs an API key: send `Authorization: Bearer <key>`"
                : "the Authorization header does not carry a valid API key as `Bearer <key>`"
            })
          )
        })
    })
  })
)

const json = (status: number, body: unknown, headers?: Record<string, string>) =>
  HttpServerResponse.unsafeJson(body, { status, ...(headers ? { headers } : {}) })

const encodeNotFound = Schema.encodeSync(NotFound)
const encodeNotAllowed = Schema.encodeSync(MethodNotAllowed)

/** Answers a path no endpoint has (404), or one that exists under other methods (405 with `Allow`). */
const notRouted = (request: HttpServerRequest.HttpServerRequest, path: string) => {
  const allowed = allowedMethods(path)
  return allowed.length > 0 && !allowed.includes(request.method)
    ? json(
      405,
      encodeNotAllowed(
        new MethodNotAllowed({ message: `${request.method} is not allowed on ${path}; use ${allowed.join(", ")}` })
      ),
      { allow: allowed.join(", ") }
    )
    : json(404, encodeNotFound(new NotFound({ message: `no route ${request.method} ${path}` })))
}

// Served by the platform beside the API's endpoints.
const documentPaths = new Set(["/docs", "/openapi.json"])

/**
 * Shapes every answer that does not come from a handler:
 * - a path is served only as its endpoint declares it (a trailing slash allowed): `//publish`, `/PUBLISH`,
 *   `/%70ublish` or `/publish;a` are 404s before any routing, so one endpoint has one behaviour (counting,
 *   metrics, auth);
 * - JSON 404s, and 405 with `Allow` for a known path under the wrong method;
 * - one 422 for every validation failure of parameters (the framework answers a schema failure with 400);
 * - a JSON 500 for anything unexpected, logged, with no stack to the client.
 * Errors a handler fails with are encoded by the framework, with the status their schema declares.
 */
export const ApiMiddlewareLive = HttpApiBuilder.middleware(
  AggregatorApi,
  Effect.sync(() => {
    const recover = (request: HttpServerRequest.HttpServerRequest) =>
    (cause: Cause.Cause<unknown>): Effect.Effect<HttpServerResponse.HttpServerResponse, unknown> => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure)) {
        const e = failure.value
        if (e instanceof HttpApiError.HttpApiDecodeError) {
          return Effect.fail(invalid(e.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }))))
        }
        if (HttpServerError.isServerError(e) && e._tag === "RouteNotFound") return Effect.succeed(notRouted(request, pathOf(request.url)))
        return Effect.failCause(cause)
      }
      const defect = Cause.dieOption(cause)
      if (Option.isSome(defect) && HttpServerError.isServerError(defect.value) && defect.value._tag === "RequestError") {
        if (defect.value.reason === "Decode") {
          return Effect.fail(
            new ValidationFailed({ message: "body must be JSON", issues: [{ path: "", message: "body is not valid JSON" }] })
          )
        }
      }
      return Effect.logError("unhandled failure", cause).pipe(
        Effect.as(json(500, { error: "internal_error", message: "internal error; see the server log" }))
      )
    }

    return (app) =>
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        const path = pathOf(request.url)
        if (!isDeclaredPath(path) && !documentPaths.has(path)) return Effect.succeed(notRouted(request, path))
        return Effect.catchAllCause(app, recover(request)) as Effect.Effect<HttpServerResponse.HttpServerResponse, ValidationFailed>
      })
  }),
  { withContext: true }
)

// Swagger UI is all inline (its script, styles and the spec): nothing needs another origin.
const docsPolicy = {
  "content-security-policy":
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff"
}
const noSniff = { "x-content-type-options": "nosniff" }

/**
 * Adds the headers some statuses carry, after the framework has encoded the error: `Retry-After` on 429 and
 * 503, `WWW-Authenticate` on 401; `Connection: close` where the body was left unread (401, 413) and while
 * the server drains; the documentation page's policy. A pre-response handler: it sees every answer just
 * before it is written.
 */
export const statusHeaders = (config: AggregatorConfig, draining: Draining): HttpApp.PreResponseHandler => {
  const retryAfter = String(config.retryAfterSeconds)
  return (request, response) => {
    const status = response.status
    let headers: Record<string, string> | undefined
    if (request.url === "/docs" || request.url.startsWith("/docs?")) headers = docsPolicy
    else if (request.url === "/openapi.json" || request.url.startsWith("/openapi.json?")) headers = noSniff
    else if (status === 429 || status === 503) headers = { "retry-after": retryAfter }
    else if (status === 401) {
      const presented = (request.headers["authorization"] ?? "").trim() !== ""
      headers = {
        "www-authenticate": presented ? `Bearer realm="aggregator", error="invalid_token"` : `Bearer realm="aggregator"`,
        connection: "close"
      }
    } else if (status === 413) headers = { connection: "close" }
    if (draining.isOn) headers = { ...headers, connection: "close" }
    return Effect.succeed(headers === undefined ? response : HttpServerResponse.setHeaders(response, headers))
  }
}
