// A measuring stick, not product code: @effect/platform's HTTP server with no router and no HttpApi, answering
// GET / with a small JSON body. What the platform's per-request fiber and response cost before any routing.
import { HttpMiddleware, HttpServer, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { createServer } from "node:http"
const app = Effect.succeed(HttpServerResponse.unsafeJson({ status: "alive", n: 1 }))
const Main = HttpServer.serve(app, (a) => a).pipe(HttpMiddleware.withTracerDisabledWhen(() => true), HttpServer.withLogAddress, Layer.provide(NodeHttpServer.layer(createServer, { port: Number(process.env.PORT), host: "127.0.0.1" })))
NodeRuntime.runMain(Layer.launch(Main))
