import type { Latency } from "./Summary.js"

/** Nearest-rank percentile (`p` in (0, 100]) of unsorted samples; undefined when there are none. */
export const percentile = (samples: ArrayLike<number>, p: number): number | undefined => {
  if (samples.length === 0) return undefined
  const sorted = Float64Array.from(samples).sort()
  return sortedPercentile(sorted, p)
}

export const sortedPercentile = (sorted: ArrayLike<number>, p: number): number => {
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)))
  return sorted[rank - 1]
}

/** Inclusive upper bounds, in ms, of the latency histogram's buckets; one more bucket, "+Inf", takes the rest. */
export const LATENCY_BUCKETS_MS: ReadonlyArray<number> = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

/** The index of the first bound ≥ `ms` (bounds ascending), or `bounds.length` — the "+Inf" bucket — if none is. */
export const bucketIndex = (ms: number, bounds: ReadonlyArray<number> = LATENCY_BUCKETS_MS): number => {
  let lo = 0, hi = bounds.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (bounds[mid] >= ms) hi = mid
    else lo = mid + 1
  }
  return lo
}

// The fine histogram: exact to the microsecond below 2,048 µs, then 1,024 buckets per doubling (within 0.1%).
const SUB = 1024
const FINE_BUCKETS = SUB * 22
const MAX_US = 2 ** 31 - 1

const fineIndex = (us: number): number => {
  if (us < 2 * SUB) return us
  const e = 31 - Math.clz32(us) - 10
  return SUB * (e + 1) + ((us >>> e) - SUB)
}

/** The largest value, in µs, of a fine bucket. */
const fineUpper = (index: number): number => {
  if (index < 2 * SUB) return index
  const e = Math.floor(index / SUB) - 1
  return ((index % SUB) + SUB + 1) * 2 ** e - 1
}

/**
 * Latencies in fixed memory however many requests are timed: a fine log-linear histogram for the
 * percentiles (each reported as the top of its bucket, at most the maximum: within 0.1% above the exact
 * nearest-rank value), the report's coarse buckets counted exactly, and the exact maximum.
 */
export class LatencyRecorder {
  readonly #fine = new Float64Array(FINE_BUCKETS)
  readonly #coarse = new Float64Array(LATENCY_BUCKETS_MS.length + 1)
  #count = 0
  #max = 0

  record(ms: number): void {
    const us = Math.min(MAX_US, Math.max(0, Math.ceil(ms * 1000)))
    this.#fine[fineIndex(us)]++
    this.#coarse[bucketIndex(ms)]++
    this.#count++
    if (ms > this.#max) this.#max = ms
  }

  get count(): number {
    return this.#count
  }

  /** Nearest-rank percentile, `p` in (0, 100]; undefined before the first sample. */
  percentile(p: number): number | undefined {
    if (this.#count === 0) return undefined
    const rank = Math.min(this.#count, Math.max(1, Math.ceil((p / 100) * this.#count)))
    let seen = 0
    for (let i = 0; i < FINE_BUCKETS; i++) {
      seen += this.#fine[i]
      if (seen >= rank) return Math.min(this.#max, fineUpper(i) / 1000)
    }
    return this.#max
  }

  summary(): Latency | null {
    if (this.#count === 0) return null
    const round = (ms: number) => Math.round(ms * 100) / 100
    return {
      p50: round(this.percentile(50)!),
      p95: round(this.percentile(95)!),
      p99: round(this.percentile(99)!),
      max: round(this.#max),
      samples: this.#count,
      histogram: Array.from(this.#coarse, (count, i) => ({
        le_ms: i < LATENCY_BUCKETS_MS.length ? LATENCY_BUCKETS_MS[i] : "+Inf" as const,
        count
      }))
    }
  }
}
