import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"
import * as Zlib from "node:zlib"
import { PayloadTooLarge, UnsupportedMediaType, ValidationFailed } from "../../domain/Errors.js"
import { scanJson } from "./JsonKeys.js"

export const jsonType = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

/** The client went away before its whole body arrived: there is no event, and nobody to answer. */
export class ClientGone extends Data.TaggedError("ClientGone") {}

/** A request body read and parsed once: the JSON value and how deeply it nests. */
export interface JsonBody {
  readonly value: unknown
  readonly depth: number
}

export type BodyError = UnsupportedMediaType | PayloadTooLarge | ValidationFailed | ClientGone

const untypedBody = () => new UnsupportedMediaType({ message: "a request body needs content-type: application/json" })

// fatal: invalid UTF-8 is an error, not U+FFFD; without `stream` it keeps no state between calls
const utf8 = new TextDecoder("utf-8", { fatal: true })

const bodyError = (message: string, issue = message) => new ValidationFailed({ message, issues: [{ path: "", message: issue }] })

/** Reads at most `max` bytes; answers "too_large" (and stops reading) past that. */
const readLimited = (source: Readable, max: number) =>
  Effect.async<Buffer | "too_large", Error>((resume) => {
    const chunks: Array<Buffer> = []
    let size = 0
    const cleanup = () => {
      source.off("data", onData)
      source.off("end", onEnd)
      source.off("error", onError)
    }
    const onData = (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        cleanup()
        source.pause()
        resume(Effect.succeed("too_large"))
      } else {
        chunks.push(chunk)
      }
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.succeed(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size)))
    }
    const onError = (error: Error) => {
      cleanup()
      resume(Effect.fail(error))
    }
    source.on("data", onData)
    source.once("end", onEnd)
    source.once("error", onError)
    return Effect.sync(cleanup)
  })

/** Strict UTF-8 decoding, or the 422 for a body that is not. */
export const utf8Text = (bytes: Uint8Array): string | ValidationFailed => {
  try {
    return utf8.decode(bytes)
  } catch {
    return bodyError("body is not valid UTF-8")
  }
}

/** No key twice in one object, then `JSON.parse` (an empty body is `null`, as the platform reads it). */
export const parseJsonText = (text: string): JsonBody | ValidationFailed => {
  if (text === "") return { value: null, depth: 0 }
  const scan = scanJson(text)
  if (scan.duplicate !== undefined) return bodyError(`key ${JSON.stringify(scan.duplicate)} appears twice in one object`)
  try {
    return { value: JSON.parse(text), depth: scan.depth }
  } catch {
    return bodyError("body must be JSON", "body is not valid JSON")
  }
}

/** Strict UTF-8, no key twice in one object, then `JSON.parse`. */
export const parseJson = (bytes: Uint8Array): JsonBody | ValidationFailed => {
  const text = utf8Text(bytes)
  return typeof text === "string" ? parseJsonText(text) : text
}

// Bodies already read and parsed by the front door (`http/FastIngest.ts`) before it handed the request on.
const alreadyRead = new WeakMap<Readable, JsonBody | ValidationFailed>()

/**
 * Hands what `parseJson` made of a request's whole (identity-encoded) body to `readJsonBody`, which then
 * neither reads nor parses it again.
 */
export const setReadBody = (incoming: Readable, parsed: JsonBody | ValidationFailed): void => {
  alreadyRead.set(incoming, parsed)
}

/**
 * Reads and parses a JSON request body once, under our own rules: it must be declared JSON (415 for another
 * content type or none, unless `acceptUntyped`), gzip/deflate is decoded with the byte limit applied to the
 * *decoded* size (a gzip bomb is a 413, not an out-of-memory), strict UTF-8, no duplicate keys.
 */
export const readJsonBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number,
  acceptUntyped = false
): Effect.Effect<JsonBody, BodyError> => readBody(request, maxBytes, acceptUntyped, parseJson, (incoming) => alreadyRead.get(incoming))

/**
 * Reads a JSON request body once under the rules of `readJsonBody`, and makes of its decoded bytes what
 * `parse` makes of them (a refusal as a 422).
 */
export const readBody = <A>(
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number,
  acceptUntyped: boolean,
  parse: (bytes: Uint8Array) => A | ValidationFailed,
  handedOver?: (incoming: Readable) => A | ValidationFailed | undefined
): Effect.Effect<A, BodyError> => {
  const contentType = request.headers["content-type"]
  // A request with no body and no type (`POST /publish` alone) goes on to its 422.
  const missing = contentType === undefined || contentType.trim() === ""
  const untyped = missing && !acceptUntyped
  const declared = Number(request.headers["content-length"] ?? "NaN")
  if (!missing && !jsonType.test(contentType)) {
    return Effect.fail(new UnsupportedMediaType({ message: `content-type must be application/json, not ${contentType}` }))
  }
  if (untyped && declared > 0) return Effect.fail(untypedBody())
  const incoming = NodeHttpServerRequest.toIncomingMessage(request)
  const encoding = request.headers["content-encoding"]?.trim().toLowerCase() ?? ""
  // Built only when needed: an error's constructor captures a stack.
  const tooLarge = () => new PayloadTooLarge({ message: `request body must be at most ${maxBytes} bytes`, limit: maxBytes })

  const decode = (source: Readable) =>
    Effect.flatMap(
      readLimited(source, maxBytes).pipe(
        Effect.mapError((e) =>
          incoming.destroyed && !incoming.complete
            ? new ClientGone()
            : bodyError(source === incoming ? `could not read the body: ${e.message}` : `body is not valid ${encoding} data`)
        )
      ),
      (bytes): Effect.Effect<A, BodyError> => {
        if (bytes === "too_large") return Effect.fail(tooLarge())
        // a chunked body declares no length: only now is it known to be there
        if (untyped && bytes.length > 0) return Effect.fail(untypedBody())
        const parsed = parse(bytes)
        return parsed instanceof ValidationFailed ? Effect.fail(parsed) : Effect.succeed(parsed)
      }
    )

  if (encoding === "" || encoding === "identity") {
    if (declared > maxBytes) return Effect.fail(tooLarge())
    const parsed = handedOver?.(incoming)
    if (parsed === undefined) return decode(incoming)
    return parsed instanceof ValidationFailed ? Effect.fail(parsed) : Effect.succeed(parsed)
  }
  if (encoding === "gzip" || encoding === "x-gzip" || encoding === "deflate") {
    return Effect.acquireUseRelease(
      Effect.sync(() => {
        const decoder = encoding === "deflate" ? Zlib.createInflate() : Zlib.createGunzip()
        incoming.pipe(decoder)
        return decoder
      }),
      decode,
      (decoder) =>
        Effect.sync(() => {
          incoming.unpipe(decoder)
          decoder.destroy()
        })
    )
  }
  return Effect.fail(new UnsupportedMediaType({ message: `content-encoding ${encoding} is not supported; use gzip or deflate` }))
}
