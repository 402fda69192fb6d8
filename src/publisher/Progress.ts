import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import type { Tally } from "./Tally.js"

export interface ProgressState {
  readonly done: number
  readonly total: number
  readonly elapsedMs: number
  readonly retries: number
  readonly problems: number
}

// one formatter: `toLocaleString` builds a new one on every call
const grouped = new Intl.NumberFormat("en-US")
const n = (x: number) => grouped.format(x)

const rateOf = (s: ProgressState) => (s.elapsedMs > 0 ? (s.done * 1000) / s.elapsedMs : 0)

const tail = (s: ProgressState) =>
  `${n(Math.round(rateOf(s)))} events/s · ${n(s.retries)} retries · ${n(s.problems)} failed or rejected`

/** One line for a log: `progress 9,000/20,000 events (45.0%) · …`. */
export const progressLine = (s: ProgressState): string =>
  `progress ${n(s.done)}/${n(s.total)} events (${((100 * s.done) / Math.max(1, s.total)).toFixed(1)}%) · ` +
  `${(s.elapsedMs / 1000).toFixed(1)} s · ${tail(s)}`

/** A terminal bar: `[#########-----------]  45.0% 9,000/20,000 · …`. */
export const progressBar = (s: ProgressState, width = 30): string => {
  const fraction = Math.min(1, s.done / Math.max(1, s.total))
  const filled = Math.round(fraction * width)
  const rate = rateOf(s)
  const eta = rate > 0 && s.done < s.total ? ` · ETA ${Math.ceil((s.total - s.done) / rate)} s` : ""
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${(100 * fraction).toFixed(1).padStart(5)}% ` +
    `${n(s.done)}/${n(s.total)} · ${tail(s)}${eta}`
}

const write = (text: string) => Effect.sync(() => void process.stderr.write(text))

/**
 * Reports progress on stderr until the returned effect is run: a redrawn bar on a terminal, a line every
 * `interval` otherwise. Running the returned effect stops it and prints the final state.
 */
export const startProgress = (tally: Tally, total: number, interval: Duration.Duration) =>
  Effect.gen(function*() {
    const tty = process.stderr.isTTY === true
    const started = yield* Clock.currentTimeMillis
    const state = Effect.map(Clock.currentTimeMillis, (now): ProgressState => ({
      done: tally.done,
      total,
      elapsedMs: now - started,
      retries: tally.retries,
      problems: tally.problems
    }))
    const render = tty
      ? Effect.flatMap(state, (s) => write(`\r\x1b[2K${progressBar(s)}`))
      : Effect.flatMap(state, (s) => write(`${progressLine(s)}\n`))
    const fiber = yield* render.pipe(
      Effect.repeat(Schedule.spaced(tty ? Duration.millis(200) : interval)),
      Effect.delay(tty ? Duration.zero : interval),
      Effect.forkScoped
    )
    return Fiber.interrupt(fiber).pipe(
      Effect.zipRight(tty ? Effect.flatMap(state, (s) => write(`\r\x1b[2K${progressBar(s)}\n`)) : render)
    )
  })
