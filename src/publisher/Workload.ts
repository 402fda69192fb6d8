import type { EventInput } from "../domain/Event.js"

/** sfc32 from four 32-bit words, warmed up: a generator of values in [0, 1). */
const sfc32 = (a: number, b: number, c: number, d: number): () => number => {
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

const low = (seed: number) => seed >>> 0
const high = (seed: number) => Math.floor(seed / 2 ** 32) >>> 0

/** A seeded generator of 32-bit values (sfc32), so a seed always yields the same workload. */
export const prng = (seed: number): () => number =>
  sfc32(0x9e3779b9 ^ low(seed), 0x243f6a88 ^ high(seed), 0xb7e15162, 1)

/** The generator of one key's content: a function of the seed and the key alone, so any key can be rebuilt. */
const keyed = (seed: number, key: number): () => number =>
  sfc32(0x9e3779b9 ^ low(seed), 0x243f6a88 ^ high(seed), 0xb7e15162 ^ Math.imul(key, 0x85ebca6b), key >>> 0)

export interface WorkloadOptions {
  readonly seed: number
  readonly events: number
  /** Fraction of `events` that re-send an earlier event, 0 ≤ f < 1. */
  readonly duplicates: number
  readonly topics: number
}

/** The event-id prefix of a seed: the same seed names the same keys, so a re-run is all duplicates. */
export const runIdOf = (seed: number): string => `pub-${seed}`

/** Duplicate sends for `events` sends: round(events × fraction), leaving at least one original. */
export const duplicateCount = (events: number, fraction: number): number =>
  events === 0 ? 0 : Math.min(events - 1, Math.max(0, Math.round(events * fraction)))

const BASE_TIME = Date.UTC(2025, 0, 1)

/** What varies between the events of a workload, drawn from the seed and the key. */
export interface Fields {
  /** The topic's number: the topic is `topic-<number>`. */
  readonly topicNumber: number
  readonly topic: string
  readonly timestamp: string
  readonly user: string
  readonly amount: number
  readonly twoTags: boolean
}

/**
 * A workload held as its seed: `events` sends, exactly `duplicateCount(events, duplicates)` of them exact
 * re-sends of an earlier event (each drawn uniformly from the originals sent before it), interleaved at
 * random positions. Each key's event is rebuilt from the seed and the key when needed, and the order of
 * sends is drawn as it is read (`cursor`), so nothing grows with the number of events.
 */
export class Workload {
  readonly runId: string
  readonly distinctKeys: number
  readonly duplicateSends: number
  readonly events: number
  readonly #seed: number
  readonly #topics: number

  constructor(readonly options: WorkloadOptions) {
    this.#seed = options.seed
    this.#topics = options.topics
    this.runId = runIdOf(options.seed)
    this.events = options.events
    this.duplicateSends = duplicateCount(options.events, options.duplicates)
    this.distinctKeys = options.events - this.duplicateSends
  }

  fields(key: number): Fields {
    const random = keyed(this.#seed, key)
    const micros = Math.floor(random() * 1000).toString().padStart(3, "0")
    const iso = new Date(BASE_TIME + key * 10 + Math.floor(random() * 10)).toISOString()
    const topicNumber = Math.floor(random() * this.#topics)
    return {
      topicNumber,
      topic: `topic-${topicNumber}`,
      timestamp: `${iso.slice(0, -1)}${micros}Z`,
      user: `user-${Math.floor(random() * 1000)}`,
      amount: Math.floor(random() * 100_000),
      twoTags: random() >= 0.5
    }
  }

  eventId(key: number): string {
    return `${this.runId}-${key}`
  }

  topic(key: number): string {
    return this.fields(key).topic
  }

  /** The topic of the topic number in `Fields`. */
  static topicNamed(topicNumber: number): string {
    return `topic-${topicNumber}`
  }

  /** The event of a key, as the aggregator's schema reads it. */
  event(key: number): EventInput {
    const f = this.fields(key)
    return {
      topic: f.topic,
      event_id: this.eventId(key),
      timestamp: f.timestamp,
      source: "publisher",
      payload: { n: key, user: f.user, amount_cents: f.amount, tags: f.twoTags ? ["load", "test"] : ["load"] }
    }
  }

  /**
   * `JSON.stringify(this.event(key))`, written out: every string in it is made of characters JSON does not
   * escape (digits, letters, `-`, `:`, `.`), so a template gives the same text for a fraction of the cost.
   */
  encoded(key: number, f: Fields = this.fields(key)): string {
    return `{"topic":"${f.topic}","event_id":"${this.runId}-${key}","timestamp":"${f.timestamp}","source":"publisher",` +
      `"payload":{"n":${key},"user":"${f.user}","amount_cents":${f.amount},"tags":${f.twoTags ? `["load","test"]` : `["load"]`}}}`
  }

  /** The order of sends, drawn from the seed as it is read. */
  cursor(): Cursor {
    return new Cursor(prng(this.#seed), this.distinctKeys, this.duplicateSends)
  }
}

/** Reads the sends of a workload in order: `next()` is the key of the next send, -1 after the last. */
export class Cursor {
  #originals = 0
  #originalsLeft: number
  #duplicatesLeft: number
  /** Sends read so far. */
  position = 0
  /** Whether the send `next()` returned last re-sends an earlier key. */
  duplicate = false

  constructor(readonly random: () => number, distinctKeys: number, duplicateSends: number) {
    this.#originalsLeft = distinctKeys
    this.#duplicatesLeft = duplicateSends
  }

  get remaining(): number {
    return this.#originalsLeft + this.#duplicatesLeft
  }

  next(): number {
    const left = this.#originalsLeft + this.#duplicatesLeft
    if (left === 0) return -1
    this.position++
    this.duplicate = this.#originals > 0 &&
      (this.#originalsLeft === 0 || this.random() * left < this.#duplicatesLeft)
    if (this.duplicate) {
      this.#duplicatesLeft--
      return Math.floor(this.random() * this.#originals)
    }
    this.#originalsLeft--
    return this.#originals++
  }
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
