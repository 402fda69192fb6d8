import * as net from "node:net"
import * as tls from "node:tls"

/** An HTTP answer: the status, `Retry-After`, the head's header lines as received, and the body (text by default). */
export interface Answer<Body = string> {
  readonly status: number
  readonly retryAfter: string | undefined
  /** The header lines after the status line, CRLF-separated, as latin1 text. */
  readonly headerLines: string
  readonly body: Body
}

/** Reads a body out of the bytes it was received in (which the next read may overwrite). */
export type BodyReader<Body> = (bytes: Buffer, start: number, end: number) => Body

export const textBody: BodyReader<string> = (bytes, start, end) => bytes.toString("utf8", start, end)

/** The body as bytes of its own. */
export const bytesBody: BodyReader<Uint8Array> = (bytes, start, end) => Uint8Array.prototype.slice.call(bytes, start, end)

/** Why a request got no answer at all. */
export type WireFailure =
  | { readonly _tag: "Transport"; readonly message: string }
  | { readonly _tag: "Timeout" }
  | { readonly _tag: "Invalid"; readonly message: string }

export type Done<Body = string> = (failure: WireFailure | undefined, answer: Answer<Body> | undefined) => void

/** Where requests go: the aggregator's address and the head lines every request carries. */
export interface Target {
  readonly host: string
  readonly port: number
  readonly secure: boolean
  /** The URL's path without its trailing slash, prepended to every request path. */
  readonly basePath: string
  /** `Host:` and, with an API key, `Authorization:` lines, each ending in CRLF. */
  readonly headLines: string
}

export const targetOf = (url: string, apiKey: string | undefined): Target => {
  const u = new URL(url)
  const secure = u.protocol === "https:"
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: u.port === "" ? (secure ? 443 : 80) : Number(u.port),
    secure,
    basePath: u.pathname.replace(/\/+$/, ""),
    headLines: `Host: ${u.host}\r\n` + (apiKey === undefined ? "" : `Authorization: Bearer ${apiKey}\r\n`)
  }
}

const HEAD_ROOM = 1024

/**
 * One POST of a JSON body at a time, written into a buffer that is reused from request to request: the body
 * goes in piece by piece after room kept for the head, which is written last, right before it, once the
 * length is known. A batch of events is thus never one large string (those live until a full collection).
 * A request's bytes must not be needed any more when the next one begins: the send loop begins the next
 * only after the answer to the last, or after giving up on it.
 */
export class RequestBuffer {
  #buf: Buffer
  #at = HEAD_ROOM

  constructor(readonly target: Target, readonly path: string, size = 16 * 1024) {
    this.#buf = Buffer.allocUnsafe(Math.max(size, 2 * HEAD_ROOM))
  }

  begin(): void {
    this.#at = HEAD_ROOM
  }

  append(text: string): void {
    // at most 3 bytes a UTF-16 unit
    if (this.#buf.length - this.#at < 3 * text.length) {
      const grown = Buffer.allocUnsafe(Math.max(2 * this.#buf.length, this.#at + 3 * text.length))
      this.#buf.copy(grown, 0, 0, this.#at)
      this.#buf = grown
    }
    this.#at += this.#buf.write(text, this.#at, "utf8")
  }

  /** The whole request: head and body, in one piece of the buffer. */
  finish(): Buffer {
    const head = `POST ${this.target.basePath}${this.path} HTTP/1.1\r\n${this.target.headLines}` +
      `Content-Type: application/json\r\nContent-Length: ${this.#at - HEAD_ROOM}\r\n\r\n`
    const size = Buffer.byteLength(head)
    const body = this.#buf.subarray(HEAD_ROOM, this.#at)
    if (size > HEAD_ROOM) return Buffer.concat([Buffer.from(head), body])
    this.#buf.write(head, HEAD_ROOM - size, "utf8")
    return this.#buf.subarray(HEAD_ROOM - size, this.#at)
  }
}

/** A connection unused this long is replaced rather than reused: the server may be closing it just now. */
const IDLE_LIMIT_MS = 2_000
const MAX_HEAD_BYTES = 64 * 1024
const READ_BUFFER_BYTES = 64 * 1024
const CRLF2 = Buffer.from("\r\n\r\n")

interface Head {
  readonly status: number
  readonly headerLines: string
  readonly retryAfter: string | undefined
  /** -1: chunked; -2: until the connection closes; otherwise the body's length. */
  readonly length: number
  readonly close: boolean
  /** Offset of the body in the buffer. */
  readonly bodyStart: number
}

const INVALID_HEAD = "the answer is not HTTP/1.1"

const parseHead = (buf: Buffer, end: number): Head | string => {
  const head = buf.toString("latin1", 0, end)
  if (!/^HTTP\/1\.[01] \d{3}(?: |\r|$)/.test(head)) return INVALID_HEAD
  const status = Number(head.slice(9, 12))
  let retryAfter: string | undefined
  let length = -2
  let chunked = false
  let close = head.charCodeAt(7) === 48 // HTTP/1.0
  for (let at = head.indexOf("\r\n"); at !== -1;) {
    const start = at + 2
    const next = head.indexOf("\r\n", start)
    const stop = next === -1 ? head.length : next
    const colon = head.indexOf(":", start)
    if (colon <= start || colon > stop) return INVALID_HEAD
    // only four names matter; their lengths rule out every other header without building strings
    const size = colon - start
    if (size === 14 || size === 17 || size === 10 || size === 11) {
      const name = head.slice(start, colon).toLowerCase()
      const value = head.slice(colon + 1, stop).trim()
      if (name === "content-length") {
        if (!/^\d+$/.test(value)) return "the answer's Content-Length is not a number"
        length = Number(value)
      } else if (name === "transfer-encoding") {
        chunked = value.toLowerCase().split(",").some((token) => token.trim() === "chunked")
      } else if (name === "connection") {
        const tokens = value.toLowerCase()
        close = tokens.includes("close") ? true : tokens.includes("keep-alive") ? false : close
      } else if (name === "retry-after") {
        retryAfter = value
      }
    }
    at = next
  }
  // answers that never have a body
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) length = 0
  else if (chunked) length = -1
  const firstLine = head.indexOf("\r\n")
  const headerLines = firstLine === -1 ? "" : head.slice(firstLine + 2)
  return { status, headerLines, retryAfter, length, close: close || length === -2, bodyStart: end + 4 }
}

/**
 * Where a chunked body ends, with its text: `undefined` while more bytes are needed, a string message when
 * it is malformed.
 */
const parseChunked = (buf: Buffer, start: number): { readonly end: number; readonly body: Buffer } | string | undefined => {
  const parts: Array<Buffer> = []
  let at = start
  for (;;) {
    const eol = buf.indexOf("\r\n", at, "latin1")
    if (eol === -1) return buf.length - at > 1024 ? "a chunk size line is too long" : undefined
    const sizeText = buf.toString("latin1", at, eol).split(";")[0].trim()
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeText)) return "a chunk size is not hexadecimal"
    const size = parseInt(sizeText, 16)
    if (size === 0) {
      // trailers, if any, end with an empty line
      let line = eol + 2
      for (;;) {
        const next = buf.indexOf("\r\n", line, "latin1")
        if (next === -1) return undefined
        if (next === line) return { end: next + 2, body: Buffer.concat(parts) }
        line = next + 2
      }
    }
    const dataStart = eol + 2
    if (buf.length < dataStart + size + 2) return undefined
    parts.push(buf.subarray(dataStart, dataStart + size))
    at = dataStart + size + 2
  }
}

/**
 * One keep-alive HTTP/1.1 connection carrying one request at a time, written and read by hand: the send
 * loop's requests are a few fixed lines around a body it has already encoded, and the answers it reads
 * need only their status, `Retry-After` and body. A connection that failed, timed out, was closed by the
 * server or sat idle is replaced by a new one at the next request.
 */
export class Connection<Body = string> {
  #socket: net.Socket | undefined
  #buf: Buffer | undefined
  #head: Head | undefined
  #done: Done<Body> | undefined
  #deadline = 0
  #timer: ReturnType<typeof setTimeout> | undefined
  #lastUsed = 0
  #closed = false
  #readBuffer: Buffer | undefined

  constructor(
    readonly target: Target,
    readonly readBody: BodyReader<Body> = textBody as unknown as BodyReader<Body>
  ) {}

  /**
   * Sends `bytes` (a whole request, in one piece or several) and calls `done` exactly once: with the answer, or why there was none.
   * Without `timeoutMs` the request waits for its answer as long as the connection lasts.
   */
  request(bytes: Uint8Array | ReadonlyArray<Uint8Array>, timeoutMs: number | undefined, done: Done<Body>): void {
    if (this.#done !== undefined) throw new Error("Connection.request: a request is already in flight")
    const now = performance.now()
    if (this.#socket !== undefined && now - this.#lastUsed > IDLE_LIMIT_MS) this.#drop()
    const socket = this.#socket ?? this.#open()
    this.#done = done
    this.#deadline = timeoutMs === undefined ? Infinity : now + timeoutMs
    if (this.#timer === undefined && timeoutMs !== undefined) this.#timer = setTimeout(this.#check, timeoutMs).unref()
    if (bytes instanceof Uint8Array) return void socket.write(bytes)
    // one write of every piece, without copying them into one buffer first
    socket.cork()
    for (const piece of bytes) socket.write(piece)
    socket.uncork()
  }

  /** Gives up on the request in flight, if any, without calling its `done`; the next request opens a new connection. */
  abort(): void {
    if (this.#done === undefined) return
    this.#done = undefined
    this.#drop()
  }

  /** Opens the connection ahead of the first request; `ready` is called once it is up or has failed. */
  warm(ready: () => void): void {
    const socket = this.#socket ?? this.#open()
    if (!socket.connecting) return ready()
    const settled = () => {
      socket.off("connect", settled)
      socket.off("close", settled)
      ready()
    }
    socket.on("connect", settled)
    socket.on("close", settled)
  }

  /** Ends the connection; a request in flight is dropped without an answer. */
  close(): void {
    this.#closed = true
    this.#done = undefined
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#drop()
  }

  #open(): net.Socket {
    const { host, port, secure } = this.target
    let socket: net.Socket
    if (secure) {
      socket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host })
      socket.on("data", (chunk: Buffer) => {
        if (this.#socket === socket) this.#read(chunk, false)
      })
    } else {
      // reads land in one buffer of the connection's own, without a Buffer and a stream event per read
      const buffer = this.#readBuffer ??= Buffer.allocUnsafe(READ_BUFFER_BYTES)
      socket = net.connect({
        host,
        port,
        onread: {
          buffer,
          callback: (bytes: number) => {
            if (this.#socket === socket) this.#read(buffer.subarray(0, bytes), true)
            return true
          }
        }
      })
    }
    socket.setNoDelay(true)
    this.#socket = socket
    this.#lastUsed = performance.now()
    this.#buf = undefined
    this.#head = undefined
    socket.on("end", () => {
      if (this.#socket !== socket) return
      if (this.#head !== undefined && this.#head.length === -2 && this.#buf !== undefined) {
        const head = this.#head
        const buf = this.#buf
        this.#finish(undefined, {
          status: head.status,
          retryAfter: head.retryAfter,
          headerLines: head.headerLines,
          body: this.readBody(buf, head.bodyStart, buf.length)
        })
      }
      this.#fail({ _tag: "Transport", message: "the server closed the connection before answering" })
    })
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (this.#socket === socket) this.#fail({ _tag: "Transport", message: error.code ?? error.message })
    })
    socket.on("close", () => {
      if (this.#socket === socket) this.#fail({ _tag: "Transport", message: "the connection closed before the answer" })
    })
    return socket
  }

  #drop(): void {
    const socket = this.#socket
    this.#socket = undefined
    this.#buf = undefined
    this.#head = undefined
    socket?.destroy()
  }

  #fail(failure: WireFailure): void {
    this.#drop()
    this.#finish(failure, undefined)
  }

  #finish(failure: WireFailure | undefined, answer: Answer<Body> | undefined): void {
    const done = this.#done
    if (done === undefined) return
    this.#done = undefined
    this.#lastUsed = performance.now()
    done(failure, answer)
  }

  readonly #check = (): void => {
    this.#timer = undefined
    if (this.#done === undefined || this.#closed || this.#deadline === Infinity) return
    const left = this.#deadline - performance.now()
    if (left <= 0) this.#fail({ _tag: "Timeout" })
    else this.#timer = setTimeout(this.#check, left).unref()
  }

  /** `chunk` is `shared` when it is a view of the read buffer, which the next read overwrites. */
  #read(chunk: Buffer, shared: boolean): void {
    const kept = this.#buf
    const buf = kept === undefined ? chunk : Buffer.concat([kept, chunk])
    const keep = (from: number) => {
      this.#buf = buf.length <= from ? undefined : shared && kept === undefined ? Buffer.from(buf.subarray(from)) : buf.subarray(from)
    }
    if (this.#done === undefined) return this.#fail({ _tag: "Invalid", message: "the server sent bytes no request asked for" })
    let head = this.#head
    if (head === undefined) {
      const end = buf.indexOf(CRLF2)
      if (end === -1) {
        if (buf.length > MAX_HEAD_BYTES) return this.#fail({ _tag: "Invalid", message: "the answer's head is too long" })
        return keep(0)
      }
      const parsed = parseHead(buf, end)
      if (typeof parsed === "string") return this.#fail({ _tag: "Invalid", message: parsed })
      if (parsed.status < 200) {
        // an interim answer (100 Continue): the real one follows
        this.#buf = undefined
        if (buf.length > parsed.bodyStart) this.#read(buf.subarray(parsed.bodyStart), shared && kept === undefined)
        return
      }
      head = parsed
      this.#head = head
    }
    let end: number, body: Body
    if (head.length >= 0) {
      end = head.bodyStart + head.length
      if (buf.length < end) return keep(0)
      body = this.readBody(buf, head.bodyStart, end)
    } else if (head.length === -1) {
      const chunked = parseChunked(buf, head.bodyStart)
      if (chunked === undefined) return keep(0)
      if (typeof chunked === "string") return this.#fail({ _tag: "Invalid", message: chunked })
      end = chunked.end
      body = this.readBody(chunked.body, 0, chunked.body.length)
    } else {
      return keep(0) // read until the server closes the connection
    }
    const extra = buf.length > end
    this.#buf = undefined
    this.#head = undefined
    if (head.close || extra) this.#drop()
    this.#finish(undefined, { status: head.status, retryAfter: head.retryAfter, headerLines: head.headerLines, body })
  }
}
