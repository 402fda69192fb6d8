import type * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiSwagger from "@effect/platform/HttpApiSwagger"
import * as HttpLayerRouter from "@effect/platform/HttpLayerRouter"

/** The app answering `GET /docs` with Swagger UI (loaded by Docs.ts on first use). */
export const makeApp = (api: HttpApi.HttpApi.Any) =>
  HttpLayerRouter.toHttpEffect(HttpApiSwagger.layerHttpLayerRouter({ api, path: "/docs" }))
