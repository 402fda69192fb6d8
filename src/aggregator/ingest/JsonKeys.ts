/** What one linear pass over a JSON text finds: the first key repeated in one object, and the deepest nesting. */
export interface JsonScan {
  readonly duplicate: string | undefined
  readonly depth: number
}

/**
 * One linear scan of `text`. `JSON.parse` silently keeps the last of duplicate keys, so
 * `{"event_id":"a","event_id":"b"}` would be stored as one thing while a reader of the raw request sees
 * another; such bodies are refused. The depth lets deep values be guarded before anything recursive (the
 * schema's error formatter) sees them. Text that is not JSON ends the scan early (the parser then rejects it).
 */
export const scanJson = (text: string): JsonScan => {
  // One entry per open container: a Set of its keys for an object, null for an array.
  const stack: Array<Set<string> | null> = []
  let depth = 0
  let expectKey = false
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      const start = i
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i)
        if (d === 0x5c /* \ */) i++
        else if (d === 0x22) break
      }
      if (i >= n) break
      const top = stack.length > 0 ? stack[stack.length - 1] : null
      if (expectKey && top !== null) {
        const raw = text.slice(start, i + 1)
        let key: string
        try {
          key = raw.indexOf("\\") === -1 ? raw.slice(1, -1) : JSON.parse(raw)
        } catch {
          break
        }
        if (top.has(key)) return { duplicate: key, depth }
        top.add(key)
        expectKey = false
      }
    } else if (c === 0x7b /* { */) {
      stack.push(new Set())
      if (stack.length > depth) depth = stack.length
      expectKey = true
    } else if (c === 0x5b /* [ */) {
      stack.push(null)
      if (stack.length > depth) depth = stack.length
      expectKey = false
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop()
      expectKey = false
    } else if (c === 0x2c /* , */) {
      expectKey = stack.length > 0 && stack[stack.length - 1] !== null
    } else if (c === 0x3a /* : */) {
      expectKey = false
    }
  }
  return { duplicate: undefined, depth }
}
