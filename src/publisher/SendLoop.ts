import {
  type AttemptFailure,
  type BackoffPolicy,
  classify,
  describeFailure,
  mayHaveBeenCounted,
  parseRetryAfter,
  retryDelay
} from "./Retry.js"
import type { Answer as Answered, Tally } from "./Tally.js"
import { type Answer, Connection, RequestBuffer, type Target, type WireFailure } from "../client/Wire.js"
import { type Cursor, Workload } from "./Workload.js"

export interface LoopOptions {
  readonly mode: "single" | "batch"
  readonly batchSize: number
  readonly concurrency: number
  /** Cap on first attempts, events per second. */
  readonly rate: number | undefined
  readonly timeoutMs: number
  readonly maxRetries: number
  readonly policy: BackoffPolicy
  readonly target: Target
}

const cpuMicros = () => {
  const { system, user } = process.cpuUsage()
  return user + system
}

const notTheApi: AttemptFailure = { _tag: "Invalid", message: "answer did not match the API" }

const parsed = (body: string): unknown => {
  try {
    return JSON.parse(body)
  } catch {
    return undefined
  }
}

const isObject = (x: unknown): x is Record<string, unknown> => typeof x === "object" && x !== null && !Array.isArray(x)

/**
 * What an answer to POST /publish says, read as the API defines it: 201 `processed`, 200
 * `dropped_duplicate` (each with its `id` and `topic`), any other 2xx unreadable, anything else its status.
 */
export const readPublishAnswer = (answer: Answer): Answered | AttemptFailure => {
  const { status } = answer
  if (status < 200 || status >= 300) return { _tag: "Status", status, retryAfter: answer.retryAfter }
  const expected = status === 201 ? "processed" : status === 200 ? "dropped_duplicate" : undefined
  if (expected === undefined) return { _tag: "Invalid", message: `unreadable ${status} answer` }
  const body = parsed(answer.body)
  return isObject(body) && body.status === expected && typeof body.id === "string" && typeof body.topic === "string"
    ? expected
    : notTheApi
}

export interface BatchItem {
  readonly index: number
  readonly topic: string | null
  readonly event_id: string | null
  readonly status: "processed" | "dropped_duplicate" | "rejected"
  readonly errors?: ReadonlyArray<{ readonly path: string; readonly message: string }>
}

const isItemStatus = (s: unknown): s is BatchItem["status"] =>
  s === "processed" || s === "dropped_duplicate" || s === "rejected"

const isIssue = (x: unknown) => isObject(x) && typeof x.path === "string" && typeof x.message === "string"

const isItem = (x: unknown): x is BatchItem =>
  isObject(x) && typeof x.index === "number" && (x.topic === null || typeof x.topic === "string") &&
  (x.event_id === null || typeof x.event_id === "string") && isItemStatus(x.status) &&
  (x.errors === undefined || (Array.isArray(x.errors) && x.errors.every(isIssue)))

/** What an answer to POST /publish/batch says: its item results when it is a BatchResult, else why not. */
export const readBatchAnswer = (answer: Answer): ReadonlyArray<BatchItem> | AttemptFailure => {
  const { status } = answer
  if (status < 200 || status >= 300) return { _tag: "Status", status, retryAfter: answer.retryAfter }
  if (status !== 200) return { _tag: "Invalid", message: `unreadable ${status} answer` }
  const body = parsed(answer.body)
  if (
    !isObject(body) || typeof body.received !== "number" || typeof body.processed !== "number" ||
    typeof body.duplicates !== "number" || typeof body.rejected !== "number" || !Array.isArray(body.results)
  ) return notTheApi
  const results: Array<unknown> = body.results
  for (let i = 0; i < results.length; i++) if (!isItem(results[i])) return notTheApi
  return results as Array<BatchItem>
}

/**
 * Counts a batch answer item by item; an item the answer does not account for (no result at its index, or
 * one naming another event) counts as failed.
 */
export const countBatchAnswer = (
  tally: Tally,
  keys: ArrayLike<number>,
  topic: (index: number) => string,
  eventId: (key: number) => string,
  results: ReadonlyArray<BatchItem>
): void => {
  const byIndex = new Array<BatchItem | undefined>(keys.length)
  for (const r of results) if (Number.isInteger(r.index) && r.index >= 0 && r.index < keys.length) byIndex[r.index] = r
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]
    const r = byIndex[i]
    if (r === undefined || r.topic !== topic(i) || r.event_id !== eventId(key)) {
      // the server decided it, but the answer does not say how
      tally.unanswered(1)
      tally.failed(key, "batch answer did not account for the event")
    } else if (r.status === "rejected") {
      tally.rejected(`batch item: ${r.errors?.map((e) => e.message).join("; ") ?? "rejected"}`)
    } else {
      tally.answered(key, r.status)
    }
  }
}

/** One request slot: a connection and the request it is working through, retries included. */
class Slot {
  readonly connection: Connection
  readonly request: RequestBuffer
  readonly keys: Int32Array
  /** Topic numbers, not names: strings kept across a request would outlive young-generation collections. */
  readonly topics: Int32Array
  count = 0
  bytes: Uint8Array = new Uint8Array(0)
  started = 0
  retry = 0

  constructor(target: Target, path: string, size: number) {
    this.connection = new Connection(target)
    this.request = new RequestBuffer(target, path)
    this.keys = new Int32Array(size)
    this.topics = new Int32Array(size)
  }
}

/**
 * The send loop: `concurrency` slots, each with its own keep-alive connection, each taking the next send
 * (or the next `batchSize` of them) from the workload's cursor, encoding it, and sending it until it is
 * answered or given up, with the same retry rules as every other request (see `Retry.ts`). Plain callbacks
 * on sockets and timers; each request is written into its slot's reused buffer.
 */
export class SendLoop {
  readonly #cursor: Cursor
  readonly #slots: Array<Slot> = []
  readonly #timers = new Set<ReturnType<typeof setTimeout>>()
  #active = 0
  #begun = 0
  #closed = false
  #onDone: ((error?: unknown) => void) | undefined
  /** `performance.now()` (ms since the process started) when the first request was written; 0 before. */
  firstRequestAt = 0
  /** `performance.now()` when the last send was counted. */
  lastAnswerAt = 0
  /** The process's CPU time (user and system, µs) when the first request was written and when the last send was counted. */
  firstRequestCpu = 0
  lastAnswerCpu = 0

  constructor(readonly workload: Workload, readonly tally: Tally, readonly options: LoopOptions) {
    this.#cursor = workload.cursor()
  }

  /**
   * Opens every slot's connection, then starts sending, so the first requests do not pay for the handshakes
   * (nor does `--rate`'s clock); `onDone` is called once, when every send is counted (or with an error on a bug).
   */
  start(onDone: (error?: unknown) => void): void {
    this.#onDone = onDone
    const perRequest = this.options.mode === "single" ? 1 : this.options.batchSize
    const requests = Math.ceil(this.#cursor.remaining / perRequest)
    const slots = Math.max(1, Math.min(this.options.concurrency, requests))
    for (let i = 0; i < slots; i++) {
      this.#slots.push(new Slot(this.options.target, this.options.mode === "single" ? "/publish" : "/publish/batch", perRequest))
    }
    let opening = slots
    const go = () => {
      if (--opening > 0) return
      this.#begun = performance.now()
      this.#active = slots
      for (const slot of this.#slots) this.#guard(() => this.#next(slot))
    }
    for (const slot of this.#slots) slot.connection.warm(() => this.#guard(go))
  }

  /** Stops: closes every connection and drops every timer; nothing more is counted. */
  close(): void {
    this.#closed = true
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    for (const slot of this.#slots) slot.connection.close()
  }

  #guard(step: () => void): void {
    if (this.#closed) return
    try {
      step()
    } catch (error) {
      this.#end(error)
    }
  }

  #end(error?: unknown): void {
    this.lastAnswerAt = performance.now()
    this.lastAnswerCpu = cpuMicros()
    const onDone = this.#onDone
    this.#onDone = undefined
    this.close()
    onDone?.(error)
  }

  #later(ms: number, step: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      this.#guard(step)
    }, ms)
    this.#timers.add(timer)
  }

  #next(slot: Slot): void {
    const cursor = this.#cursor
    const index = cursor.position
    const workload = this.workload
    const request = slot.request
    request.begin()
    if (this.options.mode === "single") {
      const key = cursor.next()
      if (key === -1) return this.#slotDone()
      slot.keys[0] = key
      slot.count = 1
      request.append(workload.encoded(key))
    } else {
      let count = 0
      request.append(`{"events":[`)
      for (; count < this.options.batchSize; count++) {
        const key = cursor.next()
        if (key === -1) break
        const f = workload.fields(key)
        slot.keys[count] = key
        slot.topics[count] = f.topicNumber
        if (count > 0) request.append(",")
        request.append(workload.encoded(key, f))
      }
      if (count === 0) return this.#slotDone()
      slot.count = count
      request.append("]}")
    }
    slot.bytes = request.finish()
    slot.retry = 0
    const rate = this.options.rate
    const wait = rate === undefined ? 0 : this.#begun + (index * 1000) / rate - performance.now()
    if (wait > 0) this.#later(wait, () => this.#first(slot))
    else this.#first(slot)
  }

  #slotDone(): void {
    if (--this.#active === 0) this.#end()
  }

  #first(slot: Slot): void {
    this.tally.request()
    slot.started = performance.now()
    if (this.firstRequestAt === 0) {
      this.firstRequestAt = slot.started
      this.firstRequestCpu = cpuMicros()
    }
    this.#attempt(slot)
  }

  #attempt(slot: Slot): void {
    slot.connection.request(slot.bytes, this.options.timeoutMs, (failure, answer) =>
      this.#guard(() => this.#answered(slot, failure, answer)))
  }

  #answered(slot: Slot, failure: WireFailure | undefined, answer: Answer | undefined): void {
    const tally = this.tally
    const single = this.options.mode === "single"
    let outcome: Answered | ReadonlyArray<BatchItem> | AttemptFailure
    if (failure !== undefined) outcome = failure
    else if (single) outcome = readPublishAnswer(answer!)
    else outcome = readBatchAnswer(answer!)

    if (typeof outcome === "string") {
      tally.latency(performance.now() - slot.started)
      tally.answered(slot.keys[0], outcome)
      return this.#next(slot)
    }
    if (Array.isArray(outcome)) {
      tally.latency(performance.now() - slot.started)
      const keys = slot.keys.subarray(0, slot.count)
      countBatchAnswer(tally, keys, (i) => Workload.topicNamed(slot.topics[i]), (key) => this.workload.eventId(key), outcome)
      return this.#next(slot)
    }
    const attemptFailure = outcome as AttemptFailure
    const verdict = classify(attemptFailure)
    if (verdict === "retry" && slot.retry < this.options.maxRetries) {
      tally.retry(attemptFailure)
      for (let i = 0; i < slot.count; i++) tally.suspect(slot.keys[i])
      if (mayHaveBeenCounted(attemptFailure)) tally.unanswered(slot.count)
      const retryAfter = attemptFailure._tag === "Status" ? parseRetryAfter(attemptFailure.retryAfter, Date.now()) : undefined
      const delay = retryDelay(this.options.policy, slot.retry, Math.random(), retryAfter)
      slot.retry++
      return this.#later(delay, () => this.#attempt(slot))
    }
    const reason = describeFailure(attemptFailure)
    if (verdict === "rejected") {
      tally.latency(performance.now() - slot.started)
      for (let i = 0; i < slot.count; i++) tally.rejected(single ? reason : `batch: ${reason}`)
    } else {
      if (mayHaveBeenCounted(attemptFailure)) tally.unanswered(slot.count)
      for (let i = 0; i < slot.count; i++) tally.failed(slot.keys[i], single ? reason : `batch: ${reason}`)
    }
    this.#next(slot)
  }
}
