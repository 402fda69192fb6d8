import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, FastCheck as fc } from "effect"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import * as SocketHttpClient from "../../src/client/SocketHttpClient.js"

interface Seen {
  readonly method: string
  readonly url: string
  readonly headers: IncomingMessage["headers"]
  readonly body: string
  readonly socket: number
}

/** A `node:http` server (an independent HTTP implementation) recording each request; `answer` writes the response. */
const server = (answer: (seen: Seen, res: ServerResponse) => void) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const seen: Array<Seen> = []
      const sockets = new WeakMap<object, number>()
      let connections = 0
      const srv = createServer((req, res) => {
        const chunks: Array<Buffer> = []
        req.on("data", (d) => chunks.push(d))
        req.on("end", () => {
          if (!sockets.has(req.socket)) sockets.set(req.socket, ++connections)
          const s = { method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString(), socket: sockets.get(req.socket)! }
          seen.push(s)
          answer(s, res)
        })
      })
      await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve))
      return { url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}`, seen, srv }
    }),
    ({ srv }) =>
      Effect.promise(() =>
        new Promise<void>((resolve) => {
          srv.close(() => resolve())
          srv.closeAllConnections()
        })
      )
  )

const echo = (seen: Seen, res: ServerResponse) => {
  const body = JSON.stringify({ method: seen.method, url: seen.url, body: seen.body, custom: seen.headers["x-custom"] ?? null })
  res.writeHead(seen.url.startsWith("/teapot") ? 418 : 200, {
    "content-type": "application/json",
    "set-cookie": ["a=1", "b=2"],
    "x-answer": "yes"
  })
  res.end(body)
}

describe("SocketHttpClient: HttpClient over hand-written keep-alive connections", () => {
  // with spans on, requests go through the platform's client (which makes each one's span); with them off, straight
  // to the connection
  for (const spans of [true, false]) {
  it.live.prop(
    `spans ${spans ? "on" : "off"}: any text body, header value, path and query: sent as written, the answer read whole, one connection for all`,
    [
      fc.array(
        fc.record({
          body: fc.string({ unit: "binary", maxLength: 2000 }),
          header: fc.string({ minLength: 1, maxLength: 40 }).filter((s) => /^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$/.test(s)),
          path: fc.stringMatching(/^\/[a-z0-9/_-]{0,20}$/),
          query: fc.option(fc.stringMatching(/^[a-z]{1,5}=[a-z0-9]{0,5}$/), { nil: undefined })
        }),
        { minLength: 1, maxLength: 6 }
      )
    ],
    ([requests]) =>
      Effect.gen(function*() {
        const { seen, url } = yield* server(echo)
        const http = yield* SocketHttpClient.make
        for (const r of requests) {
          // the query as the derived client gives it: as URL parameters beside the URL
          const [key, value] = r.query?.split("=") ?? []
          const response = yield* http.execute(
            HttpClientRequest.post(`${url}${r.path}`).pipe(
              key === undefined ? (request) => request : HttpClientRequest.setUrlParam(key, value),
              HttpClientRequest.setHeader("x-custom", r.header),
              HttpClientRequest.bodyText(r.body, "text/plain; charset=utf-8")
            )
          )
          expect(response.status).toBe(r.path.startsWith("/teapot") ? 418 : 200)
          expect(response.headers["x-answer"]).toBe("yes")
          expect(response.headers["content-type"]).toBe("application/json")
          expect(yield* response.json).toEqual({
            method: "POST",
            url: `${r.path}${r.query === undefined ? "" : `?${r.query}`}`,
            body: r.body,
            custom: r.header
          })
          const sent = seen.at(-1)!
          expect(sent.headers["content-length"]).toBe(String(Buffer.byteLength(r.body)))
          expect(sent.headers["content-type"]).toBe("text/plain; charset=utf-8")
        }
        // every answer was read to its end, so the connection went back to the pool and carried the next
        expect(new Set(seen.map((s) => s.socket)).size).toBe(1)
      }).pipe(Effect.scoped, Effect.withTracerEnabled(spans)),
    { fastCheck: { numRuns: 25 } }
  )
  }

  it.live("the answer's cookies, text and bytes", () =>
    Effect.gen(function*() {
      const { url } = yield* server(echo)
      const http = yield* SocketHttpClient.make
      const response = yield* http.get(`${url}/x`)
      expect(response.cookies.cookies).toMatchObject({ a: { value: "1" }, b: { value: "2" } })
      const text = yield* response.text
      expect(JSON.parse(text)).toMatchObject({ method: "GET", url: "/x", body: "" })
      expect(new TextDecoder().decode(yield* response.arrayBuffer)).toBe(text)
    }).pipe(Effect.scoped))

  it.live("a header that would split the head is refused before anything is sent", () =>
    Effect.gen(function*() {
      const { seen, url } = yield* server(echo)
      const http = yield* SocketHttpClient.make
      const failed = yield* Effect.either(
        http.execute(HttpClientRequest.get(`${url}/x`).pipe(HttpClientRequest.setHeader("x-custom", "a\r\nx-injected: 1")))
      )
      expect(Either.isLeft(failed) && failed.left._tag === "RequestError" && failed.left.reason).toBe("Encode")
      expect(seen).toEqual([])
    }).pipe(Effect.scoped))

  it.live("a request interrupted in flight drops its connection; the next request gets its own answer", () =>
    Effect.gen(function*() {
      const { seen, url } = yield* server((s, res) => (s.url === "/hang" ? undefined : echo(s, res)))
      const http = yield* SocketHttpClient.make
      const hung = yield* Effect.either(Effect.timeout(http.get(`${url}/hang`), "100 millis"))
      expect(Either.isLeft(hung)).toBe(true)
      const after = yield* Effect.flatMap(http.get(`${url}/after`), (r) => r.json)
      expect(after).toMatchObject({ url: "/after" })
      expect(seen.map((s) => s.socket)).toEqual([1, 2])
    }).pipe(Effect.scoped))

  it.live("nothing listening: a transport error", () =>
    Effect.gen(function*() {
      const { srv, url } = yield* server(echo)
      yield* Effect.promise(() => new Promise<void>((resolve) => srv.close(() => resolve())))
      const http = yield* SocketHttpClient.make
      const failed = yield* Effect.either(http.get(`${url}/x`))
      expect(Either.isLeft(failed) && failed.left._tag === "RequestError" && failed.left.reason).toBe("Transport")
    }).pipe(Effect.scoped))

  it.live("once its scope is closed the client refuses, without opening a connection", () =>
    Effect.gen(function*() {
      const { seen, url } = yield* server(echo)
      const http = yield* Effect.scoped(SocketHttpClient.make)
      const failed = yield* Effect.either(http.get(`${url}/x`))
      expect(Either.isLeft(failed) && failed.left._tag === "RequestError" && failed.left.reason).toBe("Transport")
      expect(seen).toEqual([])
    }).pipe(Effect.scoped))
})
