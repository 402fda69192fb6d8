import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"

/**
 * Swagger UI at /docs, as `HttpApiSwagger.layer` serves it. Its page carries swagger-ui's script, 1.9 MB of
 * source that V8 holds twice (the module's text and the string, 3.4 MB as UTF-16), so the module is loaded on
 * the first request for the page instead of at start.
 */
export const DocsLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    const { api } = yield* HttpApi.Api
    const scope = yield* Effect.scope
    const app = yield* Effect.cached(
      Effect.promise(() => import("./DocsPage.js")).pipe(
        Effect.flatMap((page) => page.makeApp(api)),
        Scope.extend(scope)
      )
    )
    yield* router.get("/docs", Effect.flatten(app))
  })
)
