// Preloaded into a program (`node --import ./bench/lib/count-ops.mjs …`): counts the Effect run-loop steps (one per
// primitive the fiber runtime evaluates) and the fibers started, and on SIGUSR2 appends the totals to $COUNT_FILE.
// A count, not a time: it does not move with the machine's load. Used by bench/effect-ops.mjs.
import { appendFileSync } from "node:fs"
const base = process.env.COUNT_ROOT ?? process.cwd()
const fr = await import(`${base}/node_modules/effect/dist/esm/internal/fiberRuntime.js`)
const P = fr.FiberRuntime.prototype
const counts = { ops: 0, fibers: 0 }
const byOp = {}
for (const k of Object.getOwnPropertyNames(P)) {
  if (!/^[A-Z]/.test(k) || typeof P[k] !== "function") continue
  const f = P[k]
  byOp[k] = 0
  P[k] = function(op) { counts.ops++; byOp[k]++; return f.call(this, op) }
}
const start = P.start
P.start = function(...a) { counts.fibers++; return start.apply(this, a) }
const startFork = P.startFork
if (startFork) P.startFork = function(...a) { counts.fibers++; return startFork.apply(this, a) }
process.on("SIGUSR2", () => appendFileSync(process.env.COUNT_FILE ?? "/tmp/counts.jsonl", JSON.stringify({ ...counts, byOp }) + "\n"))
