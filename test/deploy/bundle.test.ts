import { readFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

// `node dist/aggregator` runs an esbuild bundle (package.json `bundle:aggregator`): only the modules the
// aggregator uses, so it starts in far less memory than the compiled files that import whole packages.
// Run `npm run build` first (`npm test` does).

const root = fileURLToPath(new URL("../..", import.meta.url))
const entry = path.join(root, "dist/aggregator/index.js")

/** The entry and every file it imports statically: the code loaded at start. */
const loadedAtStart = (): Map<string, string> => {
  const files = new Map<string, string>()
  const visit = (file: string) => {
    if (files.has(file)) return
    const text = readFileSync(file, "utf8")
    files.set(file, text)
    for (const m of text.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s*"(\.[^"]+)"/gm)) visit(path.resolve(path.dirname(file), m[1]!))
    for (const m of text.matchAll(/^import\s*"(\.[^"]+)"/gm)) visit(path.resolve(path.dirname(file), m[1]!))
  }
  visit(entry)
  return files
}

describe("the aggregator's bundle", () => {
  it("is what dist/aggregator/index.js runs: bundled, not the compiled main.js", () => {
    expect(readFileSync(entry, "utf8")).not.toMatch(/^import "\.\/main\.js"/m)
    expect(loadedAtStart().size).toBeGreaterThan(1)
  })

  it("is ASCII, so V8 keeps its source text one byte a character instead of two", () => {
    for (const [file, text] of loadedAtStart()) {
      const at = text.search(/[^\x00-\x7f]/)
      expect(at, `${path.relative(root, file)} has a non-ASCII character near ${JSON.stringify(text.slice(at - 40, at + 10))}`)
        .toBe(-1)
    }
  })

  it("loads ioredis, PGlite and Swagger UI only when they are used", () => {
    for (const [file, text] of loadedAtStart()) {
      const name = path.relative(root, file)
      expect(text, name).not.toMatch(/^import\b[^;]*?\bfrom\s*"(ioredis|@electric-sql\/pglite)"/m)
      expect(text, name).not.toContain("SwaggerUIBundle")
    }
  })
})
