import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberRef from "effect/FiberRef"
import * as Layer from "effect/Layer"
import * as LogLevel from "effect/LogLevel"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type { ServerResponse } from "node:http"
import { Overloaded, StorageUnavailable } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"
import { Batcher, type Written } from "../ingest/Batcher.js"
import { jsonType, parseJson, setReadBody } from "../ingest/Body.js"
import { Counters } from "../ingest/Counters.js"
import { GUARDED_DEPTH, validateItem } from "../ingest/Validation.js"
import * as Metrics from "../ops/Metrics.js"
import { Draining } from "../ops/Lifecycle.js"
import type { FrontDoor, FrontDoorSlot } from "./Connections.js"
import { bearerCheck } from "./Authorization.js"
import { requestIdOf } from "./Observe.js"

/** The slot in the Node server's request path where the ingest front door is set (see `Connections.makeServer`). */
export class FrontDoorSlotTag extends Context.Tag("Aggregator/FrontDoorSlot")<FrontDoorSlotTag, FrontDoorSlot>() {}

const route = "POST /publish"

const encodeStorageUnavailable = Schema.encodeSync(StorageUnavailable)
const encodeOverloaded = Schema.encodeSync(Overloaded)
const storageStatus = HttpApiSchema.getStatusError(StorageUnavailable)
const overloadedStatus = HttpApiSchema.getStatusError(Overloaded)

/**
 * `POST /publish` in its common case, answered beneath the HTTP framework: a well-formed, authorised,
 * identity-encoded JSON event with a declared length. Everything else — a refusal of any kind (401, 413,
 * 415, 422), a chunked or compressed body, a server that is draining, debug logging — goes to the HttpApi
 * endpoint, which stays the one definition of the route (OpenAPI, derived client, every refusal's answer);
 * a body already read is handed over with the request, parsed, so it is still read and parsed once.
 *
 * The work is the endpoint's own, in the same order and with the same functions (parse with the
 * duplicate-key scan, the compiled validation, the group commit, the counters, the latency histogram, the
 * request id), and the answer is byte for byte the endpoint's; a test holds the two paths to the same
 * answers. What it saves is the framework's per-request effects (fiber, router, HttpApi handler, response
 * conversion), which were most of a single event's CPU (BENCHMARKS.md). `FAST_INGEST=false` turns it off.
 */
export const FastIngestLive = Layer.scopedDiscard(
  Effect.gen(function*() {
    const config = yield* AggregatorConfig
    const slot = yield* FrontDoorSlotTag
    if (!config.fastIngest) return
    // debug logging writes one line per request: that is the endpoint's job
    if (LogLevel.lessThan(yield* FiberRef.get(FiberRef.currentMinimumLogLevel), LogLevel.Info)) return
    const batcher = yield* Batcher
    const counters = yield* Counters
    const draining = yield* Draining
    const runSync = Runtime.runSync(yield* Effect.runtime<never>())
    const authorised = config.apiKeys.length === 0 ? () => true : bearerCheck(config.apiKeys)
    // The outcomes a flush's answers decide are added to the counters in one step, in a microtask queued by
    // the first of them: it runs before the event loop reads another request, so a client that has its
    // answer and asks `/stats` next sees its event counted.
    const decided = { processed: 0, duplicates: 0, rejected: 0 }
    let queued = false
    const count = () => {
      queued = false
      const outcome = { ...decided }
      decided.processed = 0
      decided.duplicates = 0
      runSync(counters.record(outcome))
    }
    yield* Metrics.register(Metrics.fastIngestRequests)

    const answer = (response: ServerResponse, started: number, requestId: string, status: number, body: string, retry: boolean) => {
      // 499 (nginx's "client closed request"), as the endpoint counts a client that left before its answer
      Metrics.requestDurationOf(route, response.destroyed ? 499 : status).unsafeUpdate((performance.now() - started) / 1000, [])
      if (response.destroyed) return
      Metrics.fastIngestRequests.unsafeUpdate(1, [])
      const headers: Record<string, string | number> = {
        "x-request-id": requestId,
        "content-type": "application/json",
        "content-length": Buffer.byteLength(body)
      }
      if (retry) headers["retry-after"] = String(config.retryAfterSeconds)
      if (draining.isOn) headers["connection"] = "close"
      response.writeHead(status, headers)
      response.end(body)
    }

    const front: FrontDoor = (request, response, toApp) => {
      if (request.method !== "POST" || request.url !== "/publish" || draining.isOn) return false
      const headers = request.headers
      const length = headers["content-length"]
      const contentType = headers["content-type"]
      if (
        length === undefined || headers["transfer-encoding"] !== undefined || contentType === undefined ||
        !jsonType.test(contentType) || (headers["content-encoding"] !== undefined && headers["content-encoding"] !== "identity") ||
        headers["expect"] !== undefined
      ) return false
      const declared = Number(length)
      if (!(declared > 0 && declared <= config.maxBodyBytes) || !authorised(headers["authorization"])) return false

      const started = performance.now()
      const chunks: Array<Buffer> = []
      let size = 0
      const onData = (chunk: Buffer) => {
        size += chunk.length
        chunks.push(chunk)
      }
      const onGone = () => {
        request.off("data", onData)
        request.off("end", onEnd)
        // no event, and nobody to answer: counted as the endpoint counts it
        Metrics.requestDurationOf(route, 499).unsafeUpdate((performance.now() - started) / 1000, [])
      }
      const onEnd = () => {
        request.off("data", onData)
        request.off("close", onGone)
        const bytes = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)
        const parsed = parseJson(bytes)
        const checked = "value" in parsed
          ? validateItem(parsed.value, config.maxPayloadBytes, parsed.depth > GUARDED_DEPTH)
          : undefined
        if (checked === undefined || Either.isLeft(checked)) {
          // a refusal: the endpoint answers it, from the body already read and parsed
          setReadBody(request, parsed)
          return toApp(request, response)
        }
        const event = checked.right
        const incomingId = headers["x-request-id"]
        const requestId = requestIdOf(typeof incomingId === "string" ? incomingId : undefined)
        batcher.offer([event], (outcome: Written) => {
          if (Either.isLeft(outcome)) {
            const e = outcome.left
            if (e._tag === "StorageUnavailable") {
              runSync(counters.recordStorageFailure(1))
              return answer(response, started, requestId, storageStatus, JSON.stringify(encodeStorageUnavailable(e)), true)
            }
            return answer(response, started, requestId, overloadedStatus, JSON.stringify(encodeOverloaded(e)), true)
          }
          const stored = outcome.right[0] !== undefined
          if (stored) decided.processed++
          else decided.duplicates++
          if (!queued) {
            queued = true
            queueMicrotask(count)
          }
          answer(
            response,
            started,
            requestId,
            stored ? 201 : 200,
            `{"status":"${stored ? "processed" : "dropped_duplicate"}","id":${JSON.stringify(event.event_id)},"topic":${JSON.stringify(event.topic)}}`,
            false
          )
        })
      }
      request.on("data", onData)
      request.once("end", onEnd)
      request.once("close", onGone)
      // an aborted body: 'close' follows, and it is handled there
      request.on("error", () => {})
      return true
    }

    slot.current = front
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      if (slot.current === front) slot.current = undefined
    }))
  })
)
