import * as Cookies from "@effect/platform/Cookies"
import * as Headers from "@effect/platform/Headers"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientError from "@effect/platform/HttpClientError"
import type * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as UrlParams from "@effect/platform/UrlParams"
import * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Inspectable from "effect/Inspectable"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { type Answer, bytesBody, Connection, type Target } from "./Wire.js"

const decoder = new TextDecoder()

/** A response read whole off the connection: its body is already in memory, so every reading of it is immediate. */
class SocketResponse extends Inspectable.Class implements HttpClientResponse.HttpClientResponse {
  readonly [HttpClientResponse.TypeId]: HttpClientResponse.TypeId = HttpClientResponse.TypeId
  readonly [HttpIncomingMessage.TypeId]: HttpIncomingMessage.TypeId = HttpIncomingMessage.TypeId
  readonly remoteAddress = Option.none<string>()
  #headers: Headers.Headers | undefined
  #setCookie: Array<string> = []

  constructor(readonly request: HttpClientRequest.HttpClientRequest, readonly answer: Answer<Uint8Array>) {
    super()
  }

  get status(): number {
    return this.answer.status
  }

  get headers(): Headers.Headers {
    if (this.#headers !== undefined) return this.#headers
    const pairs: Array<readonly [string, string]> = []
    for (const line of this.answer.headerLines.split("\r\n")) {
      const colon = line.indexOf(":")
      if (colon <= 0) continue
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      if (name === "set-cookie") this.#setCookie.push(value)
      pairs.push([name, value])
    }
    return this.#headers = Headers.fromInput(pairs)
  }

  get cookies(): Cookies.Cookies {
    return this.headers["set-cookie"] === undefined ? Cookies.empty : Cookies.fromSetCookie(this.#setCookie)
  }

  #decodeError = (cause: unknown) =>
    new HttpClientError.ResponseError({ request: this.request, response: this, reason: "Decode", cause })

  get text(): Effect.Effect<string, HttpClientError.ResponseError> {
    return Effect.sync(() => decoder.decode(this.answer.body))
  }

  get json(): Effect.Effect<unknown, HttpClientError.ResponseError> {
    return Effect.try({
      try: () => {
        const text = decoder.decode(this.answer.body)
        return text === "" ? null : JSON.parse(text)
      },
      catch: this.#decodeError
    })
  }

  get urlParamsBody(): Effect.Effect<UrlParams.UrlParams, HttpClientError.ResponseError> {
    return Effect.try({
      try: () => UrlParams.fromInput(new URLSearchParams(decoder.decode(this.answer.body))),
      catch: this.#decodeError
    })
  }

  get arrayBuffer(): Effect.Effect<ArrayBuffer, HttpClientError.ResponseError> {
    const body = this.answer.body
    // `bytesBody` gives each answer a buffer of its own, exactly the body's size: no copy then
    return Effect.succeed(
      body.byteOffset === 0 && body.byteLength === body.buffer.byteLength
        ? body.buffer as ArrayBuffer
        : body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer
    )
  }

  get stream(): Stream.Stream<Uint8Array, HttpClientError.ResponseError> {
    return Stream.succeed(this.answer.body)
  }

  get formData(): Effect.Effect<FormData, HttpClientError.ResponseError> {
    return Effect.tryPromise({
      try: () => new Response(this.answer.body, { headers: this.headers as Record<string, string> }).formData(),
      catch: this.#decodeError
    })
  }

  toJSON(): unknown {
    return HttpIncomingMessage.inspect(this, {
      _id: "@effect/platform/HttpClientResponse",
      request: this.request.toJSON(),
      status: this.status
    })
  }
}

// line breaks would split the head; anything beyond latin1 cannot be written as it is
// eslint-disable-next-line no-control-regex
const unsafeHeaderText = /[\r\n\u0000]|[^\u0000-\u00ff]/

/** The request's head and body, or why it cannot be sent this way. */
const encodeRequest = (request: HttpClientRequest.HttpClientRequest, url: URL): Array<Uint8Array> | string => {
  const body = request.body
  let bytes: Uint8Array | undefined
  switch (body._tag) {
    case "Empty":
      break
    case "Uint8Array":
      bytes = body.body
      break
    case "Raw":
      if (typeof body.body === "string") bytes = Buffer.from(body.body)
      else if (body.body instanceof Uint8Array) bytes = body.body
      else return "a raw body must be a string or bytes"
      break
    default:
      return `a ${body._tag} body is not supported`
  }
  let head = `${request.method} ${url.pathname}${url.search} HTTP/1.1\r\n`
  if (request.headers["host"] === undefined) head += `Host: ${url.host}\r\n`
  for (const name in request.headers) {
    if (name === "content-length") continue
    const value = request.headers[name]
    if (unsafeHeaderText.test(name) || unsafeHeaderText.test(value)) return `header ${JSON.stringify(name)} holds a line break or a character beyond latin1`
    head += `${name}: ${value}\r\n`
  }
  if (bytes !== undefined || request.method !== "GET" && request.method !== "HEAD") {
    head += `content-length: ${bytes?.length ?? 0}\r\n`
  }
  head += "\r\n"
  const headBytes = Buffer.from(head, "latin1")
  return bytes === undefined || bytes.length === 0 ? [headBytes] : [headBytes, bytes]
}

/**
 * An `HttpClient` over keep-alive HTTP/1.1 connections written and read by hand (`Wire.ts`), one request at a
 * time on each, for requests with a body already in memory: every answer is read whole before it is returned.
 * It costs a fraction of the CPU of `node:http` a request, which matters to a client sending thousands of
 * batches a second. Connections are pooled per origin and closed with the scope.
 */
export const make: Effect.Effect<HttpClient.HttpClient, never, Scope.Scope> = Effect.gen(function*() {
  const idle = new Map<string, Array<Connection<Uint8Array>>>()
  const opened = new Set<Connection<Uint8Array>>()
  let closed = false
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      closed = true
      for (const connection of opened) connection.close()
      opened.clear()
      idle.clear()
    })
  )

  const take = (url: URL): Connection<Uint8Array> => {
    const connection = idle.get(url.origin)?.pop()
    if (connection !== undefined) return connection
    const secure = url.protocol === "https:"
    const target: Target = {
      host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: url.port === "" ? (secure ? 443 : 80) : Number(url.port),
      secure,
      basePath: "",
      headLines: ""
    }
    const created = new Connection(target, bytesBody)
    opened.add(created)
    return created
  }
  const giveBack = (url: URL, connection: Connection<Uint8Array>) => {
    if (closed) return connection.close()
    const list = idle.get(url.origin)
    if (list === undefined) idle.set(url.origin, [connection])
    else list.push(connection)
  }

  const send = (
    request: HttpClientRequest.HttpClientRequest,
    url: URL,
    fiber: Fiber.RuntimeFiber<unknown, unknown>
  ): Effect.Effect<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError> => {
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      return Effect.fail(new HttpClientError.RequestError({ request, reason: "InvalidUrl", description: url.protocol }))
    }
    const bytes = encodeRequest(request, url)
    if (typeof bytes === "string") {
      return Effect.fail(new HttpClientError.RequestError({ request, reason: "Encode", description: bytes }))
    }
    return Effect.async<HttpClientResponse.HttpClientResponse, HttpClientError.RequestError>((resume) => {
      if (closed) {
        return resume(Effect.fail(
          new HttpClientError.RequestError({ request, reason: "Transport", description: "the client is closed" })
        ))
      }
      const connection = take(url)
      connection.request(bytes, fiber.getFiberRef(currentTimeoutMs), (failure, answer) => {
        giveBack(url, connection)
        if (answer !== undefined) return resume(Effect.succeed(new SocketResponse(request, answer)))
        const cause = failure === undefined || failure._tag === "Timeout" ? new TimedOut() : new Error(failure.message)
        resume(Effect.fail(new HttpClientError.RequestError({ request, reason: "Transport", cause })))
      })
      return Effect.sync(() => {
        connection.abort()
        giveBack(url, connection)
      })
    })
  }

  // with spans on, the platform's client makes each request's span
  const traced = HttpClient.make((request, url, _signal, fiber) => send(request, url, fiber))
  // with them off, the request goes straight to the connection: the platform's client would add an AbortController
  // and a response wrapper that registers for finalization, neither of which a response read whole needs
  const client: HttpClient.HttpClient = HttpClient.makeWith(
    (prepared: Effect.Effect<HttpClientRequest.HttpClientRequest>) =>
      Effect.flatMap(prepared, (request) =>
        Effect.withFiberRuntime<HttpClientResponse.HttpClientResponse, HttpClientError.HttpClientError>((fiber) => {
          if (fiber.getFiberRef(FiberRef.currentTracerEnabled) && !fiber.getFiberRef(HttpClient.currentTracerDisabledWhen)(request)) {
            return traced.execute(request)
          }
          const url = UrlParams.makeUrl(request.url, request.urlParams, request.hash)
          if (url._tag === "Left") {
            return Effect.fail(new HttpClientError.RequestError({ request, reason: "InvalidUrl", cause: url.left }))
          }
          return send(request, url.right, fiber)
        })),
    Effect.succeed as HttpClient.HttpClient.Preprocess<never, never>
  )
  made.add(client)
  return client
})

export const layer: Layer.Layer<HttpClient.HttpClient> = Layer.scoped(HttpClient.HttpClient, make)

/**
 * A limit in milliseconds on each request this client sends in the fiber, from opening or taking the connection to
 * the whole answer; a request past it fails with a `RequestError` caused by `TimedOut`. One timer a connection
 * does it, where `Effect.timeout` forks two fibers a request (a tenth of the publisher's CPU in batch mode).
 */
export const currentTimeoutMs: FiberRef.FiberRef<number | undefined> = FiberRef.unsafeMake<number | undefined>(undefined)

/** The cause of a request's `RequestError` when it ran out of `currentTimeoutMs`. */
export class TimedOut extends Error {
  constructor() {
    super("timed out")
  }
}

const made = new WeakSet<HttpClient.HttpClient>()

/** Whether `client` is one of these, as made (not transformed), and so honours `currentTimeoutMs`. */
export const honoursTimeout = (client: HttpClient.HttpClient): boolean => made.has(client)
