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
