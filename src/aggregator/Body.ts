import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import type { Readable } from "node:stream"
import * as Zlib from "node:zlib"
import { PayloadTooLarge, UnsupportedMediaType, ValidationFailed } from "../domain/Errors.js"
import { duplicateKey } from "./JsonKeys.js"

const jsonType = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i

/** The client went away before its whole body arrived: there is no event, and nobody to answer. */
export class ClientGone extends Data.TaggedError("ClientGone") {}

const untypedBody = () => new UnsupportedMediaType({ message: "a request body needs content-type: application/json" })

// fatal: invalid UTF-8 is an error, not U+FFFD; without `stream` it keeps no state between calls
const utf8 = new TextDecoder("utf-8", { fatal: true })

const bodyError = (message: string) => new ValidationFailed({ message, issues: [{ path: "", message }] })

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
      resume(Effect.succeed(Buffer.concat(chunks, size)))
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

/**
 * Reads a request body under our own rules, before the framework sees it: a body must be declared JSON
 * (415 for another content type or none), gzip/deflate decoded with the byte limit applied to the *decoded*
 * size (a gzip bomb is a 413, not an out-of-memory), strict UTF-8. The text is then handed to the
 * framework's request, so HttpApi decodes it as usual.
 */
export const readBody = (
  request: HttpServerRequest.HttpServerRequest,
  maxBytes: number,
  acceptUntyped = false
): Effect.Effect<string, UnsupportedMediaType | PayloadTooLarge | ValidationFailed | ClientGone> => {
  // Plain code and a few Effect steps, no generator or scope: this runs on every POST (a scope is opened
  // only to decode gzip/deflate).
  const contentType = request.headers["content-type"]
  // A body must say it is JSON; a request with no body and no type (`POST /publish` alone) goes on to its 422 or 405.
  // ACCEPT_UNTYPED_BODIES reads such a body as JSON, as the service this replaces did (for clients that send none)
  const missing = contentType === undefined || contentType.trim() === ""
  const untyped = missing && !acceptUntyped
  const declared = Number(request.headers["content-length"] ?? "NaN")
  if (!missing && !jsonType.test(contentType)) {
    return Effect.fail(new UnsupportedMediaType({ message: `content-type must be application/json, not ${contentType}` }))
  }
  if (untyped && declared > 0) return Effect.fail(untypedBody())
  const incoming = NodeHttpServerRequest.toIncomingMessage(request)
  // The framework reads only a literal `application/json` as JSON (anything else it would wait for as
  // raw bytes we have already consumed), so name the accepted variants (`+json`, any case) that way.
  if (contentType !== undefined) incoming.headers["content-type"] = "application/json"
  const encoding = (request.headers["content-encoding"] ?? "identity").trim().toLowerCase()
  // Built only when needed: an error's constructor captures a stack, which costs on every request.
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
      (bytes): Effect.Effect<string, PayloadTooLarge | UnsupportedMediaType | ValidationFailed> => {
        if (bytes === "too_large") return Effect.fail(tooLarge())
        // a chunked body declares no length: only now is it known to be there
        if (untyped && bytes.length > 0) return Effect.fail(untypedBody())
        let text: string
        try {
          text = utf8.decode(bytes)
        } catch {
          return Effect.fail(bodyError("body is not valid UTF-8"))
        }
        const duplicate = duplicateKey(text)
        return duplicate === undefined
          ? Effect.succeed(text)
          : Effect.fail(bodyError(`key ${JSON.stringify(duplicate)} appears twice in one object`))
      }
    )

  if (encoding === "identity" || encoding === "") {
    return declared > maxBytes ? Effect.fail(tooLarge()) : decode(incoming)
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

/** Makes the framework read `text` as this request's body. Relies on the pinned platform-node's cached text field. */
export const presetBody = (request: HttpServerRequest.HttpServerRequest, text: string) => {
  ;(request as unknown as { textEffect: Effect.Effect<string> }).textEffect = Effect.succeed(text)
}
