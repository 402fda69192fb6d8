import type { AttemptFailure } from "./Retry.js"
import { LatencyRecorder } from "./Latency.js"
import type { Counts, Latency } from "./Summary.js"

/** What made an attempt worth repeating, as counted in the summary: the HTTP status, or the transport's failure. */
export const retryCause = (failure: AttemptFailure): string =>
  failure._tag === "Status"
    ? `http ${failure.status}`
    : failure._tag === "Transport"
    ? "connection error"
    : failure._tag === "Timeout"
    ? "timeout"
    : "unreadable answer"

export type Answer = "processed" | "dropped_duplicate"

/**
 * Counters for one run, per send and per distinct key: a few bytes a key in typed arrays (keys are indices),
 * latencies in a fixed histogram. Single-threaded JS: plain mutation is safe.
 */
export class Tally {
  readonly #processedByKey: Uint16Array
  readonly #acknowledged: Uint8Array
  readonly #suspect: Uint8Array
  readonly #latencies = new LatencyRecorder()
  #requests = 0
  #retries = 0
  #processed = 0
  #duplicates = 0
  #rejected = 0
  #failed = 0
  #unanswered = 0
  readonly #reasons = new Map<string, number>()
  readonly #retryCauses = new Map<string, number>()

  constructor(
    readonly events: number,
    readonly distinctKeys: number
  ) {
    this.#processedByKey = new Uint16Array(distinctKeys)
    this.#acknowledged = new Uint8Array(distinctKeys)
    this.#suspect = new Uint8Array(distinctKeys)
  }

  request(): void {
    this.#requests++
  }

  /** Time from a request's first attempt to its answer. */
  latency(ms: number): void {
    this.#latencies.record(ms)
  }

  retry(failure: AttemptFailure): void {
    this.#retries++
    const cause = retryCause(failure)
    this.#retryCauses.set(cause, (this.#retryCauses.get(cause) ?? 0) + 1)
  }

  retryCauses(): Record<string, number> {
    return Object.fromEntries(this.#retryCauses)
  }

  answered(key: number, answer: Answer): void {
    this.#acknowledged[key] = 1
    if (answer === "processed") {
      this.#processed++
      if (this.#processedByKey[key] < 0xffff) this.#processedByKey[key]++
    } else {
      this.#duplicates++
    }
  }

  rejected(reason: string): void {
    this.#rejected++
    this.#reasons.set(`rejected: ${reason}`, (this.#reasons.get(`rejected: ${reason}`) ?? 0) + 1)
  }

  failed(key: number, reason: string): void {
    this.#failed++
    this.#suspect[key] = 1
    this.#reasons.set(`failed: ${reason}`, (this.#reasons.get(`failed: ${reason}`) ?? 0) + 1)
  }

  /** Sends of an attempt whose outcome the server may have decided and counted unseen (see `mayHaveBeenCounted`). */
  unanswered(events: number): void {
    this.#unanswered += events
  }

  /** An attempt for this key failed; it may have been stored even so. */
  suspect(key: number): void {
    this.#suspect[key] = 1
  }

  get done(): number {
    return this.#processed + this.#duplicates + this.#rejected + this.#failed
  }

  get retries(): number {
    return this.#retries
  }

  get problems(): number {
    return this.#rejected + this.#failed
  }

  latencySummary(): Latency | null {
    return this.#latencies.summary()
  }

  failureReasons(): Record<string, number> {
    return Object.fromEntries(this.#reasons)
  }

  /** Keys never answered "processed" after an attempt that may have reached the server. */
  unconfirmedKeys(): Array<number> {
    const keys: Array<number> = []
    for (let k = 0; k < this.distinctKeys; k++) {
      if (this.#suspect[k] === 1 && this.#processedByKey[k] === 0) keys.push(k)
    }
    return keys
  }

  isAcknowledged(key: number): boolean {
    return this.#acknowledged[key] === 1
  }

  counts(): Counts {
    let keysProcessed = 0, keysProcessedTwice = 0, keysAcknowledged = 0
    for (let k = 0; k < this.distinctKeys; k++) {
      if (this.#processedByKey[k] > 0) keysProcessed++
      if (this.#processedByKey[k] > 1) keysProcessedTwice++
      if (this.#acknowledged[k] === 1) keysAcknowledged++
    }
    return {
      events: this.events,
      distinct_keys: this.distinctKeys,
      duplicate_sends: this.events - this.distinctKeys,
      requests: this.#requests,
      retries: this.#retries,
      processed: this.#processed,
      duplicates: this.#duplicates,
      rejected: this.#rejected,
      failed: this.#failed,
      unanswered_sends: this.#unanswered,
      keys_processed: keysProcessed,
      keys_processed_twice: keysProcessedTwice,
      keys_acknowledged: keysAcknowledged
    }
  }
}
