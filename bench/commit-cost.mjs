// What one group commit costs the aggregator, without HTTP: `node bench/commit-cost.mjs` builds the aggregator's
// services (config from the environment, DATABASE_URL required) and stores `COMMITS` gathered batches of
// `SIZES` (comma-separated) events through Batcher.offer, one batch in flight at a time, printing the process
// CPU a commit and an event for each size. The difference between sizes is the fixed cost of a commit.
import { Effect, Layer } from "effect"
import { AggregatorConfig } from "../dist/aggregator/Config.js"
import { Batcher } from "../dist/aggregator/ingest/Batcher.js"
import { Counters } from "../dist/aggregator/ingest/Counters.js"
import { Database } from "../dist/aggregator/storage/Database.js"
import { Draining } from "../dist/aggregator/ops/Lifecycle.js"

const sizes = (process.env.SIZES ?? "1,10,30,100").split(",").map(Number)
const commits = Number(process.env.COMMITS ?? 2000)
const services = Batcher.Default.pipe(
  Layer.provideMerge(Database.Default),
  Layer.provideMerge(Counters.Default),
  Layer.provideMerge(Draining.Default),
  Layer.provideMerge(AggregatorConfig.Default),
  Layer.provide(Layer.setTracerEnabled(false))
)
let n = 0
const events = (k) => Array.from({ length: k }, () => ({
  topic: "cost", event_id: `e-${process.pid}-${n++}`, timestamp: "2026-11-30T08:00:00.000Z", source: "bench", payload: `{"n":${n}}`
}))
const program = Effect.gen(function*() {
  yield* (yield* Database).awaitConnected
  const batcher = yield* Batcher
  const commit = (batch) => Effect.async((resume) => batcher.offer(batch, (outcome) => resume(outcome)))
  for (const size of sizes) {
    for (let i = 0; i < 200; i++) yield* commit(events(size))
    const batches = Array.from({ length: commits }, () => events(size))
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    for (const b of batches) yield* commit(b)
    const wall = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    const us = cpu.user + cpu.system
    console.log(`${size} events a commit: ${(us / commits).toFixed(0)} µs CPU a commit, ${(us / commits / size).toFixed(1)} µs an event, ` +
      `${(wall * 1000 / commits).toFixed(0)} µs wall a commit`)
  }
})
await Effect.runPromise(Effect.scoped(Effect.provide(program, services)))
