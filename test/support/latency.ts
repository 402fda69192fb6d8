import { bucketIndex, LATENCY_BUCKETS_MS, LatencyRecorder } from "../../src/publisher/Latency.js"
import type { Bucket, Latency } from "../../src/publisher/Summary.js"

/** Non-cumulative counts of `samples` per bucket of `bounds` (ascending), plus a last "+Inf" bucket. */
export const histogramOf = (
  samples: ArrayLike<number>,
  bounds: ReadonlyArray<number> = LATENCY_BUCKETS_MS
): Array<Bucket> => {
  const counts = new Array<number>(bounds.length + 1).fill(0)
  for (let i = 0; i < samples.length; i++) counts[bucketIndex(samples[i], bounds)]++
  return counts.map((count, i) => ({ le_ms: i < bounds.length ? bounds[i] : "+Inf", count }))
}

export const latencyOf = (samples: ArrayLike<number>): Latency | null => {
  const recorder = new LatencyRecorder()
  for (let i = 0; i < samples.length; i++) recorder.record(samples[i])
  return recorder.summary()
}
