import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { scanJson } from "../../../src/aggregator/ingest/JsonKeys.js"

/** The first key that appears twice in one JSON object of `text`, or undefined. */
const duplicateKey = (text: string): string | undefined => scanJson(text).duplicate

const tricky = fc.constantFrom("a", "{", "}", "[", "]", ",", ":", "\"", "\\", "é", "🚀", "\u0001", "a\"b", "x\\\"y")
const key = fc.oneof(fc.string({ maxLength: 6 }), tricky)
const value = fc.letrec((tie) => ({
  v: fc.oneof({ depthSize: "small" }, fc.jsonValue({ maxDepth: 1 }), tricky, fc.array(tie("v"), { maxLength: 3 }), fc.dictionary(key, tie("v"), { maxKeys: 4 }))
})).v

describe("duplicateKey", () => {
  it.prop("finds nothing in any JSON that JSON.stringify writes (it cannot repeat a key)", [value], ([v]) => {
    expect(duplicateKey(JSON.stringify(v))).toBeUndefined()
  })

  it.prop("finds a key written twice in one object, however deep and however escaped", [value, key, fc.nat(4)], ([v, k, depth]) => {
    let text = `{${JSON.stringify(k)}:1,"other":${JSON.stringify(v)},${JSON.stringify(k).replace("a", "\\u0061")}:2}`
    for (let i = 0; i < depth; i++) text = `{"level${i}":[0,${text}]}`
    expect(duplicateKey(text)).toBe(k)
  })

  it("does not confuse the same key in sibling or nested objects with a duplicate", () => {
    expect(duplicateKey(`{"a":{"a":1},"b":[{"a":1},{"a":2}]}`)).toBeUndefined()
    expect(duplicateKey(`[{"x":1,"x":2}]`)).toBe("x")
    expect(duplicateKey(`{"s":"{\\"a\\":1,\\"a\\":2}"}`)).toBeUndefined()
  })
})

// The scan before it compared raw key spans: one Set of decoded keys per object. The scan must find what it
// found, on texts with small objects, objects past the span-comparing size, and escaped keys.
const referenceScan = (text: string) => {
  const stack: Array<Set<string> | null> = []
  let depth = 0
  let expectKey = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (c === "\"") {
      const start = i
      for (i++; i < text.length; i++) {
        if (text[i] === "\\") i++
        else if (text[i] === "\"") break
      }
      if (i >= text.length) break
      const top = stack.length > 0 ? stack[stack.length - 1] : null
      if (expectKey && top !== null) {
        const key = JSON.parse(text.slice(start, i + 1))
        if (top.has(key)) return { duplicate: key, depth }
        top.add(key)
        expectKey = false
      }
    } else if (c === "{") {
      stack.push(new Set())
      depth = Math.max(depth, stack.length)
      expectKey = true
    } else if (c === "[") {
      stack.push(null)
      depth = Math.max(depth, stack.length)
      expectKey = false
    } else if (c === "}" || c === "]") {
      stack.pop()
      expectKey = false
    } else if (c === ",") {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== null
    } else if (c === ":") {
      expectKey = false
    }
  }
  return { duplicate: undefined, depth }
}

describe("scanJson agrees with a Set-per-object scan", () => {
  // keys drawn from a small alphabet so repeats are common; some written escaped
  const smallKey = fc.constantFrom("a", "b", "k1", "k2", "é", "\"q\"", "x\\y", ...Array.from({ length: 24 }, (_, i) => `f${i}`))
  const written = (k: string, escape: boolean) => escape ? JSON.stringify(k).replace(/[a-z]/, (ch) => `\\u00${ch.charCodeAt(0).toString(16)}`) : JSON.stringify(k)
  const text = fc.letrec<{ v: string }>((tie) => ({
    v: fc.oneof(
      { depthSize: "small" },
      fc.jsonValue({ maxDepth: 1 }).map((v) => JSON.stringify(v)),
      fc.array(tie("v"), { maxLength: 4 }).map((items) => `[${items.join(",")}]`),
      fc.array(fc.tuple(smallKey, fc.boolean(), tie("v")), { maxLength: 30 }).map((entries) =>
        `{${entries.map(([k, escape, v]) => `${written(k, escape)}:${v}`).join(",")}}`
      )
    )
  })).v

  it.prop("same duplicate and depth on generated texts, repeated keys included", [text], ([t]) => {
    expect(scanJson(t)).toEqual(referenceScan(t))
  }, { fastCheck: { numRuns: 2000 } })

  it("an object of many distinct keys, then one repeated after the 16th", () => {
    const keys = Array.from({ length: 40 }, (_, i) => `"k${i}":${i}`)
    expect(scanJson(`{${keys.join(",")}}`)).toEqual({ duplicate: undefined, depth: 1 })
    expect(scanJson(`{${keys.join(",")},"k3":0}`)).toEqual({ duplicate: "k3", depth: 1 })
    expect(scanJson(`{${keys.join(",")},"k\\u0033":0}`)).toEqual({ duplicate: "k3", depth: 1 })
    // escaped quotes and backslashes before a closing quote
    expect(scanJson(`{"a\\\\":1,"b":"x\\\\\\"","a\\\\":2}`)).toEqual({ duplicate: "a\\", depth: 1 })
  })
})
