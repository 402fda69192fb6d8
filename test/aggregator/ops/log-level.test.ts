import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, FastCheck as fc, LogLevel } from "effect"
import { afterAll, beforeAll, describe as plainDescribe, expect as plainExpect, it as plainIt } from "vitest"
import { logLevel } from "../../../src/aggregator/Config.js"
import { type Spawned, spawnAggregator, waitFor } from "../../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../../support/backends.js"
import { freshDatabase } from "../../support/database.js"
import { freePort } from "../../support/live.js"

// LOG_LEVEL read as people write it (uvicorn and Python say `warning`, Effect says `Warn`), in any case.

const read = (value: string) =>
  logLevel("LOG_LEVEL").pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["LOG_LEVEL", value]]))), Effect.either)

const spellings: ReadonlyArray<readonly [string, LogLevel.LogLevel]> = [
  ["all", LogLevel.All],
  ["trace", LogLevel.Trace],
  ["debug", LogLevel.Debug],
  ["info", LogLevel.Info],
  ["warn", LogLevel.Warning],
  ["warning", LogLevel.Warning],
  ["error", LogLevel.Error],
  ["fatal", LogLevel.Fatal],
  ["critical", LogLevel.Fatal],
  ["off", LogLevel.None],
  ["none", LogLevel.None]
]

/** The word with each letter's case picked by `upper`, and spaces around it. */
const recased = (word: string, upper: ReadonlyArray<boolean>, pad: string) =>
  pad + [...word].map((ch, i) => (upper[i % upper.length] ? ch.toUpperCase() : ch)).join("") + pad

describe("LOG_LEVEL", () => {
  it.effect.prop(
    "every usual spelling, in any case and with spaces around it, is the level it names",
    [fc.constantFrom(...spellings), fc.array(fc.boolean(), { minLength: 1, maxLength: 8 }), fc.constantFrom("", " ", "\t")],
    ([[word, level], upper, pad]) =>
      Effect.gen(function*() {
        expect(yield* read(recased(word, upper, pad))).toEqual(Either.right(level))
      })
  )

  it.effect("Effect's own spellings still work", () =>
    Effect.gen(function*() {
      for (const [text, level] of [["Warn", LogLevel.Warning], ["Info", LogLevel.Info], ["None", LogLevel.None], ["All", LogLevel.All]] as const) {
        expect(yield* read(text)).toEqual(Either.right(level))
      }
    }))

  it.effect.prop(
    "anything else is a config error that lists what is accepted",
    [fc.string({ maxLength: 12 }).filter((s) => !spellings.some(([w]) => w === s.trim().toLowerCase()))],
    ([text]) =>
      Effect.gen(function*() {
        const result = yield* read(text)
        expect([text, Either.isLeft(result)]).toEqual([text, true])
        if (Either.isLeft(result)) expect(String(result.left)).toContain("warning, error")
      })
  )
})

plainDescribe.skipIf(skipWithoutPostgres)(`the aggregator at LOG_LEVEL=warning${withoutPostgresNote}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  let agg: Spawned
  beforeAll(async () => {
    db = await freshDatabase("loglevel")
    agg = spawnAggregator({ DATABASE_URL: db.url, LOG_LEVEL: "warning" }, await freePort())
  })
  afterAll(async () => {
    agg?.child.kill("SIGTERM")
    await agg?.exited
    await db?.drop()
  })

  plainIt("starts, serves, and writes no info lines", async () => {
    await waitFor(`${agg.url}/ready`)
    agg.child.kill("SIGTERM")
    plainExpect(await agg.exited).toBe(0)
    // at Info it would have said it was listening, and "shutting down" / "drained"
    plainExpect(agg.output()).not.toMatch(/"logLevel":"INFO"/)
  })
})
