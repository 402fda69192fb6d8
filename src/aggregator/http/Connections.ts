import type { IncomingMessage } from "node:http"
import { createServer, type Server, ServerResponse } from "node:http"
import type { Socket } from "node:net"

/** The socket-level limits, from AggregatorConfig. */
export interface ConnectionLimits {
  readonly maxBodyBytes: number
  readonly headersTimeoutMs: number
  readonly requestTimeoutMs: number
  readonly maxConnections: number
  readonly lingerMs: number
  readonly lingerMaxBytes: number
  readonly bodyBufferBytes: number
  readonly retryAfterSeconds: number
}

const lingering = Symbol("lingering")

type LingeringSocket = Socket & { [lingering]?: boolean }

/**
 * A response whose `end` callback also runs when the client has already gone. Node registers that callback
 * on 'finish', which a destroyed response never emits, and the platform waits for it: without this every
 * request whose client left before its answer (a timeout during a slow commit, say) left its fiber waiting
 * forever.
 *
 * An answer given before the request's body has all arrived (413, 401, 415…) marks its socket to linger:
 * the unread rest is then read and thrown away instead of being left in the kernel's buffer, where closing
 * the socket would make it send a reset and the client would lose the answer.
 */
class AnsweringResponse extends ServerResponse {
  override end(...args: Array<any>): this {
    if (this.destroyed) {
      const callback = args.find((a) => typeof a === "function")
      if (callback !== undefined) process.nextTick(callback)
      return this
    }
    const request = this.req as IncomingMessage | undefined
    if (request !== undefined && !request.complete && this.socket !== null) {
      ;(this.socket as LingeringSocket)[lingering] = true
      // flowing with nobody listening: whatever still arrives is discarded, and the parser keeps reading
      request.removeAllListeners("data")
      request.resume()
    }
    return (super.end as (...a: Array<any>) => this)(...args)
  }
}

/**
 * Node calls `destroySoon` once a `Connection: close` answer is written. For a socket whose request body
 * is still arriving, half-close instead (the client sees the end of the answer), keep reading and
 * discarding for at most `lingerMs` and `lingerMaxBytes`, and close once the client has closed its side.
 */
const lingerOnClose = (socket: LingeringSocket, limits: ConnectionLimits) => {
  const destroySoon = socket.destroySoon.bind(socket)
  socket.destroySoon = () => {
    if (socket[lingering] !== true) return destroySoon()
    if (socket.writable) socket.end()
    const start = socket.bytesRead
    const done = () => {
      clearTimeout(timer)
      clearInterval(meter)
      socket.destroy()
    }
    const timer = setTimeout(done, limits.lingerMs)
    // the HTTP parser reads the socket natively, so 'data' does not fire: watch the count instead
    const meter = setInterval(() => {
      if (socket.bytesRead - start > limits.lingerMaxBytes) done()
    }, 50)
    socket.once("end", done)
    socket.once("close", done)
    socket.resume()
  }
}

/**
 * Bounds the memory held by bodies still arriving (uploads that stall keep what they sent so far): each
 * request with a body reserves its declared length (MAX_BODY_BYTES when it declares none or is
 * compressed) until its body has arrived or its connection has gone. One that does not fit in
 * BODY_BUFFER_BYTES is answered 429 with Retry-After before any of its body is read (and is no event).
 * Answers whether the request goes on to the app, and whether it may be told `100 Continue`.
 */
const uploadBudget = (limits: ConnectionLimits) => {
  let reserved = 0
  const refusal = JSON.stringify({
    error: "overloaded",
    message: "too many request bodies are arriving at once; retry later"
  })
  return (request: IncomingMessage, response: ServerResponse): "refused" | "admitted" | "too_large" => {
    const length = request.headers["content-length"]
    const chunked = request.headers["transfer-encoding"] !== undefined
    if (!chunked && (length === undefined || length === "0")) return "admitted"
    const encoding = (request.headers["content-encoding"] ?? "identity").trim().toLowerCase()
    const identity = encoding === "identity" || encoding === ""
    const declared = Number(length)
    // refused by the app before a byte of it is read
    if (identity && declared > limits.maxBodyBytes) return "too_large"
    const size = identity && !chunked && Number.isFinite(declared) ? declared : limits.maxBodyBytes
    if (reserved + size > limits.bodyBufferBytes) {
      response.writeHead(429, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(refusal),
        "retry-after": String(limits.retryAfterSeconds),
        connection: "close"
      })
      response.end(refusal)
      return "refused"
    }
    reserved += size
    let held = true
    const release = () => {
      if (held) reserved -= size
      held = false
    }
    request.once("end", release)
    request.once("close", release)
    return "admitted"
  }
}

/**
 * What may answer a request before the HTTP app does: given the request, its response and `toApp` (which hands
 * a request to the app), it answers `true` when it has taken the request, `false` to let the app have it.
 */
export type FrontDoor = (
  request: IncomingMessage,
  response: ServerResponse,
  toApp: (request: IncomingMessage, response: ServerResponse) => void
) => boolean

/** The front door a server consults, set once the services it needs are built (see `http/FastIngest.ts`). */
export interface FrontDoorSlot {
  current: FrontDoor | undefined
}

/**
 * The aggregator's Node HTTP server, with limits against clients that are slow or hostile at the socket:
 * header and whole-request deadlines (408), a cap on open connections (further ones are closed at once),
 * lingering close after an early answer, and no `100 Continue` for a body whose declared length is already
 * over MAX_BODY_BYTES (the 413 comes instead, before the client sends it), and a bound on the memory that
 * bodies still arriving hold (`uploadBudget`). Then the front door, if one is set, and the HTTP app.
 */
export const makeServer = (limits: ConnectionLimits, front: FrontDoorSlot = { current: undefined }): Server => {
  const server = createServer({
    keepAliveTimeout: 5_000,
    ServerResponse: AnsweringResponse,
    headersTimeout: Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs),
    requestTimeout: limits.requestTimeoutMs,
    // how often Node checks those two deadlines (30 s by default, which would stretch a 10 s deadline to 40)
    connectionsCheckingInterval: Math.max(250, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 4)))
  })
  server.maxConnections = limits.maxConnections
  server.on("connection", (socket: Socket) => lingerOnClose(socket, limits))
  const admit = uploadBudget(limits)
  // Every request passes the budget before the HTTP app (the platform's 'request' listener) sees it.
  const emit = server.emit.bind(server) as (event: string, ...args: Array<any>) => boolean
  const admitted = new WeakSet<IncomingMessage>()
  const toApp = (request: IncomingMessage, response: ServerResponse) => {
    emit("request", request, response)
  }
  server.emit = ((event: string, ...args: Array<any>) => {
    if (event !== "request") return emit(event, ...args)
    const [request, response] = args as [IncomingMessage, ServerResponse]
    if (!admitted.has(request) && admit(request, response) === "refused") return true
    if (front.current !== undefined && front.current(request, response, toApp)) return true
    return emit("request", request, response)
  }) as typeof server.emit
  // With a listener here Node sends no `100 Continue` by itself: it is sent only to a body that is let in.
  server.on("checkContinue", (request: IncomingMessage, response: ServerResponse) => {
    const verdict = admit(request, response)
    if (verdict === "refused") return
    if (verdict === "admitted") response.writeContinue()
    admitted.add(request)
    emit("request", request, response)
  })
  return server
}
