// A measuring stick, not product code: the smallest HttpApi app (GET / answering a two-field Struct, tracing off),
// served by @effect/platform-node on PORT. bench/effect-ops.mjs counts its Effect steps a request.
import { HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup, HttpMiddleware, HttpServer } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"
const Api = HttpApi.make("a").add(HttpApiGroup.make("g").add(HttpApiEndpoint.get("root", "/").addSuccess(Schema.Struct({ status: Schema.String, n: Schema.Number }))))
const G = HttpApiBuilder.group(Api, "g", (h) => h.handle("root", () => Effect.succeed({ status: "alive", n: 1 })))
const ApiLive = HttpApiBuilder.api(Api).pipe(Layer.provide(G))
const Main = HttpApiBuilder.serve().pipe(Layer.provide(ApiLive), HttpMiddleware.withTracerDisabledWhen(() => true), Layer.provide(NodeHttpServer.layer(createServer, { port: Number(process.env.PORT), host: "127.0.0.1" })))
NodeRuntime.runMain(Layer.launch(Main))
