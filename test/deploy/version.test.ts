import { OpenApi } from "@effect/platform"
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"
import { AggregatorApi } from "../../src/domain/Api.js"
import { VERSION } from "../../src/domain/Version.js"

// The version is written once (src/domain/Version.ts); this holds it to package.json's and to where it is shown.

describe("the version", () => {
  const packageVersion = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version

  it("is package.json's", () => {
    expect(VERSION).toBe(packageVersion)
  })

  it("is the OpenAPI document's and the example of GET /", () => {
    const spec = OpenApi.fromApi(AggregatorApi)
    expect(spec.info.version).toBe(VERSION)
    expect(JSON.stringify(spec.components.schemas["Alive"])).toContain(`"version":"${VERSION}"`)
  })

  it("is what the built publisher says with --version", () => {
    const out = execFileSync(process.execPath, ["dist/publisher", "--version"], { encoding: "utf8" })
    expect(out.trim()).toBe(VERSION)
  })
})
