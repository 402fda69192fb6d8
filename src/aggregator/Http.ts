import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { createHash, timingSafeEqual } from "node:crypto"
import { AggregatorApi, DEFAULT_LIST_LIMIT } from "../domain/Api.js"
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
import { ClientGone, presetBody, readBody } from "./Body.js"
import { Broker } from "./Broker.js"
import { AggregatorConfig } from "./Config.js"
import { Draining } from "./Lifecycle.js"
import { Database } from "./Database.js"
import { Batcher } from "./Batcher.js"
import { eventKey, EventStore, type NewEvent } from "./EventStore.js"
import { Stats } from "./Stats.js"
import { routes } from "./Routes.js"
import { toNewEvent, validateItem, withPayloadSize } from "./Validation.js"
import { dashboardPage } from "./Dashboard.js"
import * as Metrics from "./Metrics.js"

export const VERSION = "0.1.0"

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

export const EventsLive = HttpApiBuilder.group(AggregatorApi, "events", (handlers) =>
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const store = yield* EventStore
    const batcher = yield* Batcher
    const stats = yield* Stats
    const broker = yield* Broker
    const draining = yield* Draining

    // The client is subscribed before its answer starts, so nothing stored after the first line is
    // missed, and one past STREAM_MAX_CLIENTS gets a 429 instead. Every stream ends when shutdown begins.
    // A client that falls behind is dropped: its frames end, and as the writer may be stuck waiting for a
    // socket the client no longer reads (a stream that is not pulled cannot end), the connection is
    // destroyed, which also ends the response. Frames come encoded once for all clients (Broker).
    const subscribed = new TextEncoder().encode(": subscribed\n\n")
    const heartbeat = new TextEncoder().encode(":\n\n")
    const liveTail = (topic: string | undefined, connection: { readonly destroy: () => void }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const tail = yield* broker.subscribe(topic).pipe(Scope.extend(scope), Effect.tapError(() => Scope.close(scope, Exit.void)))
        yield* Queue.awaitShutdown(tail.queue).pipe(
          Effect.zipRight(Effect.sync(() => connection.destroy())),
          Effect.forkIn(scope)
        )
        return Stream.make(subscribed).pipe(
          Stream.concat(Stream.merge(
            tail.frames,
            Stream.fromSchedule(Schedule.spaced(Duration.millis(config.streamHeartbeatMs))).pipe(Stream.as(heartbeat)),
            { haltStrategy: "left" }
          )),
          Stream.interruptWhen(draining.started),
          Stream.ensuring(Scope.close(scope, Exit.void))
        )
      })

    const storedOne = { processed: 1, duplicates: 0, rejected: 0 } as const
    const duplicateOne = { processed: 0, duplicates: 1, rejected: 0 } as const

    const write = (events: ReadonlyArray<NewEvent>) =>
      batcher.submit(events).pipe(
        Effect.tapErrorTag("StorageUnavailable", () => stats.recordStorageFailure(events.length))
      )

    return handlers
      // Without a generator, like the middleware: the single-event route is the hot path.
      .handle("publish", ({ payload }) => {
        const checked = toNewEvent(payload, config.maxPayloadBytes)
        if (Either.isLeft(checked)) return Effect.fail(new ValidationFailed({ message: "the event is invalid", issues: checked.left }))
        const event = checked.right
        return Effect.flatMap(write([event]), ([isNew]) =>
          Effect.as(stats.record(isNew ? storedOne : duplicateOne), {
            status: isNew ? "processed" as const : "dropped_duplicate" as const,
            id: event.event_id,
            topic: event.topic
          }))
      }, { uninterruptible: true })
      .handle("publishBatch", ({ payload }) =>
        Effect.gen(function*() {
          const items = Array.isArray(payload) ? payload : (payload as { events: ReadonlyArray<unknown> }).events
          if (items.length > config.maxBatchEvents) {
            return yield* new PayloadTooLarge({
              message: `a batch may hold at most ${config.maxBatchEvents} events; split it`,
              limit: config.maxBatchEvents
            })
          }
          // Each valid item is written once per key (first occurrence); later repeats are duplicates.
          const checked = items.map((item) => validateItem(item, config.maxPayloadBytes))
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
          const isNew = yield* write(toWrite)
          let processed = 0, duplicates = 0, rejected = 0
          const results = checked.map((c, index): BatchItemResult => {
            if (Either.isLeft(c)) {
              rejected++
              return { index, topic: field(items[index], "topic"), event_id: field(items[index], "event_id"), status: "rejected", errors: c.left }
            }
            const stored = slot[index] >= 0 && isNew[slot[index]]
            if (stored) processed++
            else duplicates++
            return { index, topic: c.right.topic, event_id: c.right.event_id, status: stored ? "processed" : "dropped_duplicate" }
          })
          yield* stats.record({ processed, duplicates, rejected })
          return { received: items.length, processed, duplicates, rejected, results }
        }), { uninterruptible: true })
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
        Effect.map(liveTail(urlParams.topic, NodeHttpServerRequest.toServerResponse(request)), (frames) =>
          HttpServerResponse.stream(frames, {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })))
      .handle("get", ({ path }) =>
        Effect.flatMap(store.get(path.topic, path.event_id), (event) =>
          event === undefined
            ? Effect.fail(new NotFound({ message: `no event ${path.event_id} in topic ${path.topic}` }))
            : Effect.succeed(event)))
  }))

const json = (status: number, body: unknown, headers?: Record<string, string>) =>
  HttpServerResponse.unsafeJson(body, { status, ...(headers ? { headers } : {}) })

const encodeUnavailable = Schema.encodeSync(StorageUnavailable)
const encodeOverloaded = Schema.encodeSync(Overloaded)
const encodeNotFound = Schema.encodeSync(NotFound)
const encodeTooLarge = Schema.encodeSync(PayloadTooLarge)
const encodeUnsupported = Schema.encodeSync(UnsupportedMediaType)
const encodeUnauthorized = Schema.encodeSync(Unauthorized)
const encodeNotAllowed = Schema.encodeSync(MethodNotAllowed)

const sha256 = (text: string) => createHash("sha256").update(text).digest()

/**
 * Whether an `Authorization` header carries one of `keys` as a bearer token. Digests have equal lengths,
 * so `timingSafeEqual` applies whatever the key lengths, and every key is compared: the time taken does
 * not depend on which key matched or how much of one did.
 */
const bearerCheck = (keys: ReadonlyArray<Redacted.Redacted<string>>) => {
  const digests = keys.map((key) => sha256(Redacted.value(key)))
  return (authorization: string | undefined): "ok" | "missing" | "invalid" => {
    if (authorization === undefined || authorization.trim() === "") return "missing"
    const token = /^Bearer +(\S+) *$/i.exec(authorization)?.[1]
    if (token === undefined) return "invalid"
    const presented = sha256(token)
    let ok = false
    for (const digest of digests) ok = timingSafeEqual(digest, presented) || ok
    return ok ? "ok" : "invalid"
  }
}

const readOnly = new Set(["GET", "HEAD", "OPTIONS"])

// READS_NEED_KEY: the reads that return events (the listing, one event, the live tail)
const isEventRead = (request: HttpServerRequest.HttpServerRequest) => /^\/events(?:[/?]|$)/.test(request.url)

const isPublish = (request: HttpServerRequest.HttpServerRequest) =>
  request.method === "POST" && request.url.split("?")[0] === "/publish"

/**
 * Shapes every answer that does not come from a handler's success:
 * - the body byte limit (413), and one 422 for every validation failure (the framework answers a schema
 *   failure with 400 and a non-JSON body with a defect);
 * - JSON 404s, and 405 with `Allow` for a known path under the wrong method;
 * - 503 and 429 with `Retry-After`;
 * - a JSON 500 for anything unexpected, logged, with no stack to the client;
 * - with API keys configured, 401 for a request that may carry a body (the publish routes; any method
 *   but GET, HEAD and OPTIONS, so no path spelling gets around it) without a valid bearer key, decided
 *   before the body is read. Such a request is not an event: it is neither stored nor counted.
 * A rejected `POST /publish` counts as one rejected event.
 */
export const ApiMiddlewareLive = HttpApiBuilder.middleware(
  AggregatorApi,
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const stats = yield* Stats
    const draining = yield* Draining
    const retryAfter = { "retry-after": String(config.retryAfterSeconds) }
    const authorize = config.apiKeys.length > 0 ? bearerCheck(config.apiKeys) : undefined
    const unauthorized = (verdict: "missing" | "invalid") =>
      json(
        401,
        encodeUnauthorized(
          new Unauthorized({
            message: verdict === "missing"
              ? "this route needs an API key: send `Authorization: Bearer <key>`"
              : "the Authorization header does not carry a valid API key as `Bearer <key>`"
          })
        ),
        {
          "www-authenticate": verdict === "missing" ? `Bearer realm="aggregator"` : `Bearer realm="aggregator", error="invalid_token"`,
          // the body is left unread
          connection: "close"
        }
      )

    const notRouted = (request: HttpServerRequest.HttpServerRequest) => {
      const path = request.url.split("?")[0]
      const allowed = [...new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method))]
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

    const recover = (request: HttpServerRequest.HttpServerRequest) =>
    (cause: Cause.Cause<unknown>): Effect.Effect<HttpServerResponse.HttpServerResponse, unknown> => {
      if (Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure)) {
        const e = failure.value
        if (e instanceof HttpApiError.HttpApiDecodeError) {
          const schemaIssues = e.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }))
          // the payload-size limit is configuration, out of the schema's sight: add its issue for one event
          const body = isPublish(request) ? Effect.orElseSucceed(request.json, () => undefined) : Effect.succeed(undefined)
          return Effect.flatMap(body, (event) => {
            const issues = withPayloadSize(schemaIssues, event, config.maxPayloadBytes)
            return Effect.fail(
              new ValidationFailed({ message: `the request is invalid (${issues.length} issue${issues.length === 1 ? "" : "s"})`, issues })
            )
          })
        }
        if (e instanceof StorageUnavailable) return Effect.succeed(json(503, encodeUnavailable(e), retryAfter))
        if (e instanceof Overloaded) return Effect.succeed(json(429, encodeOverloaded(e), retryAfter))
        if (HttpServerError.isServerError(e) && e._tag === "RouteNotFound") return Effect.succeed(notRouted(request))
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

    const countRejected = stats.record({ processed: 0, duplicates: 0, rejected: 1 })

    // Without a generator: this runs on every request, and each Effect step shows on the hot path.
    return (app) =>
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
        if (authorize !== undefined && (!readOnly.has(request.method) || (config.readsNeedKey && isEventRead(request)))) {
          const verdict = authorize(request.headers["authorization"])
          if (verdict !== "ok") return Effect.succeed(unauthorized(verdict))
        }
        const countsAsEvent = isPublish(request)
        const handled = app.pipe(
          Effect.catchAllCause(recover(request)),
          Effect.tapError((e) => countsAsEvent && e instanceof ValidationFailed ? countRejected : Effect.void),
          Effect.map((response) =>
            draining.isOn ? HttpServerResponse.setHeader(response, "connection", "close") : response
          )
        ) as Effect.Effect<HttpServerResponse.HttpServerResponse, ValidationFailed | PayloadTooLarge>
        if (request.method !== "POST" && request.method !== "PUT" && request.method !== "PATCH") return handled
        return Effect.matchEffect(readBody(request, config.maxBodyBytes, config.acceptUntypedBodies), {
          onFailure: (e) => {
            // a body cut off by the client going away is no event, and nobody reads this answer
            if (e instanceof ClientGone) return Effect.succeed(HttpServerResponse.empty({ status: 499 }))
            // The unread rest of an oversized body is not worth draining: close the connection.
            const answer = e instanceof PayloadTooLarge
              ? Effect.succeed(json(413, encodeTooLarge(e), { connection: "close" }))
              : e instanceof UnsupportedMediaType
              ? Effect.succeed(json(415, encodeUnsupported(e)))
              : Effect.fail(e)
            return countsAsEvent ? Effect.zipRight(countRejected, answer) : answer
          },
          onSuccess: (text) => {
            presetBody(request, text)
            return handled
          }
        })
      })
  }),
  { withContext: true }
)
