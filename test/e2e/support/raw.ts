import { Effect } from "effect"
import * as Http from "node:http"
import * as Https from "node:https"
import { parseJson } from "./http.js"
import { apiKey, E2e } from "./target.js"

export interface RawAnswer {
  readonly status: number
  readonly headers: Http.IncomingHttpHeaders
  readonly text: string
  /** The body parsed as JSON, or undefined when it is not JSON. */
  readonly json: any
}

/**
 * A request with exactly the headers given and the path as written, for what `fetch` will not send: a body
 * with no content type (fetch labels a string `text/plain`), or a path segment `.` or `..` (a URL resolves
 * it away). Publishes carry the `API_KEY` bearer key unless the case sets `authorization` itself.
 */
export const raw = (method: string, path: string, body?: string | Uint8Array, headers: Record<string, string> = {}) =>
  Effect.flatMap(E2e, ({ url }) =>
    Effect.async<RawAnswer, Error>((resume) => {
      const target = new URL(url)
      const withKey = apiKey !== undefined && method !== "GET" && !("authorization" in headers)
        ? { ...headers, authorization: `Bearer ${apiKey}` }
        : headers
      const request = (target.protocol === "https:" ? Https : Http).request({
        host: target.hostname.replace(/^\[|\]$/g, ""),
        port: target.port,
        method,
        path: `${target.pathname.replace(/\/+$/, "")}${path}`,
        // a length unless the case asks for chunks; without either, Node would pick chunked for a POST
        headers: body === undefined || "transfer-encoding" in headers
          ? withKey
          : { ...withKey, "content-length": String(Buffer.byteLength(body)) },
        timeout: 20_000
      }, (res) => {
        const chunks: Array<Buffer> = []
        res.on("data", (chunk: Buffer) => chunks.push(chunk))
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8")
          resume(Effect.succeed({ status: res.statusCode!, headers: res.headers, text, json: parseJson(text) }))
        })
        res.on("error", (e) => resume(Effect.fail(e)))
      })
      request.on("timeout", () => request.destroy(new Error(`${method} ${path}: no answer within 20 s`)))
      request.on("error", (e) => resume(Effect.fail(e)))
      request.end(body)
      return Effect.sync(() => request.destroy())
    }).pipe(Effect.orDie))

/** A path segment as the router expects it, `.` and `..` included (escaped so nothing resolves them). */
export const rawSeg = (s: string) => encodeURIComponent(s).replaceAll(".", "%2E")

export const rawEventPath = (topic: string, eventId: string) => `/events/${rawSeg(topic)}/${rawSeg(eventId)}`
