import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

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
    return {
      // unset: every e2e file starts its own aggregator on a fresh database
      aggregatorUrl
    } as const
  })
}) {}
