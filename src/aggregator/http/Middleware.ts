import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { AggregatorApi } from "../../domain/Api.js"
import { MethodNotAllowed, NotFound, ValidationFailed } from "../../domain/Errors.js"
import type { AggregatorConfig } from "../Config.js"
import type { Draining } from "../ops/Lifecycle.js"
import { allowedMethods, matchOf, pathOf } from "./Routes.js"

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
          return Effect.fail(ValidationFailed.fromIssues(e.issues.map((i) => ({ path: i.path.map(String).join("."), message: i.message }))))
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
        const { declared, path } = matchOf(request)
        if (!declared && !documentPaths.has(path)) return Effect.succeed(notRouted(request, path))
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
