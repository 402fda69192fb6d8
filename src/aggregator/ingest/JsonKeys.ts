/** What one linear pass over a JSON text finds: the first key repeated in one object, and the deepest nesting. */
export interface JsonScan {
  readonly duplicate: string | undefined
  readonly depth: number
}

// Objects with more keys than this, or with an escaped key, compare their keys through a Set of decoded
// keys; smaller ones compare the raw spans of the text, which allocates nothing.
const LINEAR_KEYS = 16

// The scan is synchronous, so one set of work arrays serves every call (emptied at its start).
/** Per open container: -1 for an array; for an object, where its keys start in `keyStart`/`keyEnd`. */
const containers: Array<number> = []
/** Per open object that switched to a Set (by container position). */
const keySets: Array<Set<string> | undefined> = []
/** The open objects' keys, as spans of the text between their quotes. */
const keyStart: Array<number> = []
const keyEnd: Array<number> = []

const sameSpan = (text: string, a: number, aEnd: number, b: number, bEnd: number): boolean => {
  if (aEnd - a !== bEnd - b) return false
  for (; a < aEnd; a++, b++) if (text.charCodeAt(a) !== text.charCodeAt(b)) return false
  return true
}

/** The key between the quotes at `start` and `end` (exclusive), unescaped; undefined if it is not a JSON string. */
const keyText = (text: string, start: number, end: number, escaped: boolean): string | undefined => {
  if (!escaped) return text.slice(start, end)
  try {
    return JSON.parse(text.slice(start - 1, end + 1))
  } catch {
    return undefined
  }
}

/**
 * One linear scan of `text`. `JSON.parse` silently keeps the last of duplicate keys, so
 * `{"event_id":"a","event_id":"b"}` would be stored as one thing while a reader of the raw request sees
 * another; such bodies are refused. The depth lets deep values be guarded before anything recursive (the
 * schema's error formatter) sees them. Text that is not JSON ends the scan early (the parser then rejects it).
 */
export const scanJson = (text: string): JsonScan => {
  containers.length = 0
  keySets.length = 0
  keyStart.length = 0
  keyEnd.length = 0
  try {
    return scan(text)
  } finally {
    // drop references to this text's keys
    keySets.length = 0
  }
}

const scan = (text: string): JsonScan => {
  let depth = 0
  let expectKey = false
  const n = text.length
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      const start = i + 1
      // the closing quote: the next one not escaped (preceded by an even number of backslashes)
      let end = text.indexOf("\"", start)
      while (end > start && text.charCodeAt(end - 1) === 0x5c /* \ */) {
        let k = end - 1
        while (text.charCodeAt(k - 1) === 0x5c) k--
        if ((end - k) % 2 === 0) break
        end = text.indexOf("\"", end + 1)
      }
      if (end < 0) break
      i = end
      const level = containers.length - 1
      if (!expectKey || level < 0 || containers[level] < 0) continue
      expectKey = false
      let escaped = false
      for (let k = start; k < end; k++) {
        if (text.charCodeAt(k) === 0x5c) {
          escaped = true
          break
        }
      }
      const first = containers[level]
      let set = keySets[level]
      if (set === undefined && (escaped || keyStart.length - first >= LINEAR_KEYS)) {
        // switch this object to a Set of its decoded keys
        set = new Set()
        for (let k = first; k < keyStart.length; k++) set.add(text.slice(keyStart[k], keyEnd[k]))
        keySets[level] = set
      }
      if (set !== undefined) {
        const key = keyText(text, start, i, escaped)
        if (key === undefined) break
        if (set.has(key)) return { duplicate: key, depth }
        set.add(key)
      } else {
        for (let k = first; k < keyStart.length; k++) {
          if (sameSpan(text, keyStart[k], keyEnd[k], start, i)) return { duplicate: text.slice(start, i), depth }
        }
        keyStart.push(start)
        keyEnd.push(i)
      }
    } else if (c === 0x7b /* { */) {
      containers.push(keyStart.length)
      keySets.push(undefined)
      if (containers.length > depth) depth = containers.length
      expectKey = true
    } else if (c === 0x5b /* [ */) {
      containers.push(-1)
      keySets.push(undefined)
      if (containers.length > depth) depth = containers.length
      expectKey = false
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      const first = containers.pop()
      keySets.pop()
      // an object's keys go with it
      if (first !== undefined && first >= 0) {
        keyStart.length = first
        keyEnd.length = first
      }
      expectKey = false
    } else if (c === 0x2c /* , */) {
      expectKey = containers.length > 0 && containers[containers.length - 1] >= 0
    } else if (c === 0x3a /* : */) {
      expectKey = false
    }
  }
  return { duplicate: undefined, depth }
}
