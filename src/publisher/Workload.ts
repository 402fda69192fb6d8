import type { EventInput } from "../domain/Event.js"

/** A seeded generator of 32-bit values (sfc32), so a seed always yields the same workload. */
export const prng = (seed: number): () => number => {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = 1
  const lo = seed >>> 0
  const hi = Math.floor(seed / 2 ** 32) >>> 0
  a ^= lo
  b ^= hi
  const next = () => {
    a >>>= 0, b >>>= 0, c >>>= 0, d >>>= 0
    const t = (a + b | 0) + d | 0
    d = d + 1 | 0
    a = b ^ (b >>> 9)
    b = c + (c << 3) | 0
    c = (c << 21) | (c >>> 11)
    c = c + t | 0
    return (t >>> 0) / 2 ** 32
  }
  for (let i = 0; i < 15; i++) next()
  return next
}

export interface WorkloadOptions {
  readonly seed: number
  readonly events: number
  /** Fraction of `events` that re-send an earlier event, 0 ≤ f < 1. */
  readonly duplicates: number
  readonly topics: number
}

export interface WorkItem {
  /** Index of the distinct event (key); a duplicate shares it with its original. */
  readonly key: number
  readonly duplicate: boolean
  readonly event: EventInput
}

export interface Workload {
  readonly runId: string
  readonly distinctKeys: number
  readonly duplicateSends: number
  /** Distinct events by key. */
  readonly originals: ReadonlyArray<EventInput>
  /** What to send, in order. */
  readonly items: ReadonlyArray<WorkItem>
}

/** The event-id prefix of a seed: the same seed names the same keys, so a re-run is all duplicates. */
export const runIdOf = (seed: number): string => `pub-${seed}`

/** Duplicate sends for `events` sends: round(events × fraction), leaving at least one original. */
export const duplicateCount = (events: number, fraction: number): number =>
  events === 0 ? 0 : Math.min(events - 1, Math.max(0, Math.round(events * fraction)))

const BASE_TIME = Date.UTC(2025, 0, 1)

const makeEvent = (runId: string, key: number, topics: number, random: () => number): EventInput => {
  const micros = Math.floor(random() * 1000).toString().padStart(3, "0")
  const iso = new Date(BASE_TIME + key * 10 + Math.floor(random() * 10)).toISOString()
  return {
    topic: `topic-${Math.floor(random() * topics)}`,
    event_id: `${runId}-${key}`,
    timestamp: `${iso.slice(0, -1)}${micros}Z`,
    source: "publisher",
    payload: {
      n: key,
      user: `user-${Math.floor(random() * 1000)}`,
      amount_cents: Math.floor(random() * 100_000),
      tags: random() < 0.5 ? ["load"] : ["load", "test"]
    }
  }
}

/**
 * `events` sends, exactly `duplicateCount(events, duplicates)` of them exact re-sends of an earlier event
 * (each drawn uniformly from the originals sent before it), interleaved at random positions.
 */
export const generateWorkload = (options: WorkloadOptions): Workload => {
  const random = prng(options.seed)
  const runId = runIdOf(options.seed)
  const duplicateSends = duplicateCount(options.events, options.duplicates)
  const distinctKeys = options.events - duplicateSends
  const originals: Array<EventInput> = []
  const items: Array<WorkItem> = []
  let originalsLeft = distinctKeys
  let duplicatesLeft = duplicateSends
  while (originalsLeft + duplicatesLeft > 0) {
    const duplicate = originals.length > 0 &&
      (originalsLeft === 0 || random() * (originalsLeft + duplicatesLeft) < duplicatesLeft)
    if (duplicate) {
      const key = Math.floor(random() * originals.length)
      items.push({ key, duplicate: true, event: originals[key] })
      duplicatesLeft--
    } else {
      const key = originals.length
      const event = makeEvent(runId, key, options.topics, random)
      originals.push(event)
      items.push({ key, duplicate: false, event })
      originalsLeft--
    }
  }
  return { runId, distinctKeys, duplicateSends, originals, items }
}

/** Consecutive slices of at most `size` items. */
export const chunk = <A>(items: ReadonlyArray<A>, size: number): Array<ReadonlyArray<A>> => {
  const chunks: Array<ReadonlyArray<A>> = []
  for (let i = 0; i < items.length; i += size) chunks.push(items.slice(i, i + size))
  return chunks
}

/** `count` distinct values from `0 … n-1`, chosen from the seed (partial Fisher–Yates). */
export const sample = (n: number, count: number, seed: number): Array<number> => {
  const random = prng(seed ^ 0x5bd1e995)
  const k = Math.min(n, count)
  const swapped = new Map<number, number>()
  const out: Array<number> = []
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(random() * (n - i))
    const vj = swapped.get(j) ?? j
    swapped.set(j, swapped.get(i) ?? i)
    out.push(vj)
  }
  return out
}
