import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { createHash, timingSafeEqual } from "node:crypto"
import { Authorization } from "../../domain/Api.js"
import { Unauthorized } from "../../domain/Errors.js"
import { AggregatorConfig } from "../Config.js"

const readOnly = new Set(["GET", "HEAD", "OPTIONS"])

const sha256 = (text: string) => createHash("sha256").update(text).digest()

/**
 * Whether an `Authorization` header carries one of `keys` as a bearer token. Digests have equal lengths,
 * so `timingSafeEqual` applies whatever the key lengths, and every key is compared: the time taken does
 * not depend on which key matched or how much of one did. The header is read whole (the scheme in any
 * case, spaces around the token), not only the part the framework's bearer decoding slices off.
 */
export const bearerCheck = (keys: ReadonlyArray<Redacted.Redacted<string>>) => {
  const digests = keys.map((key) => sha256(Redacted.value(key)))
  return (authorization: string | undefined): boolean => {
    const token = authorization === undefined ? undefined : /^\s*Bearer +(\S+) *$/i.exec(authorization)?.[1]
    if (token === undefined) return false
    const presented = sha256(token)
    let ok = false
    for (const digest of digests) ok = timingSafeEqual(digest, presented) || ok
    return ok
  }
}

/**
 * The bearer check: the `Authorization` middleware (with `HttpApiSecurity.bearer`) of the routes that write,
 * and of the event reads when READS_NEED_KEY is on.
 */
export const AuthorizationLive = Layer.effect(
  Authorization,
  Effect.map(AggregatorConfig, (config) => {
    if (config.apiKeys.length === 0) return Authorization.of({ apiKey: () => Effect.void })
    const valid = bearerCheck(config.apiKeys)
    return Authorization.of({
      apiKey: () =>
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
          if (!config.readsNeedKey && readOnly.has(request.method)) return Effect.void
          if (valid(request.headers["authorization"])) return Effect.void
          const missing = (request.headers["authorization"] ?? "").trim() === ""
          return Effect.fail(
            new Unauthorized({
              message: missing
                ? "this route needs an API key: send `Authorization: Bearer <key>`"
                : "the Authorization header does not carry a valid API key as `Bearer <key>`"
            })
          )
        })
    })
  })
)
