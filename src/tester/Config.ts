import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"

const httpUrl = (s: string) => URL.canParse(s) && /^https?:$/.test(new URL(s).protocol)

/** The tester's settings, read once from the environment. */
export class TesterConfig extends Effect.Service<TesterConfig>()("Tester/Config", {
  effect: Effect.gen(function*() {
    const aggregatorUrl = yield* Config.string("AGGREGATOR_URL").pipe(
      Config.map((s) => s.trim().replace(/\/+$/, "")),
      Config.validate({ message: "AGGREGATOR_URL must be an http(s) URL", validation: (s) => s === "" || httpUrl(s) }),
      Config.option,
      Config.map(Option.filter((s) => s !== ""))
    )
    const apiKey = yield* Config.redacted("API_KEY").pipe(
      Config.map((key) => Redacted.make(Redacted.value(key).trim())),
      Config.option,
      Config.map(Option.filter((key) => Redacted.value(key) !== ""))
    )
    return {
      // unset: every e2e file starts its own aggregator on a fresh database
      aggregatorUrl,
      // sent as the bearer key on publishes; a self-started aggregator is then started with it as its API_KEYS
      apiKey
    } as const
  })
}) {}
