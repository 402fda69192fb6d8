import { eventIdProblem, sourceProblem, timestampUtcIso, topicProblem } from "../../domain/Event.js"
import type { NewEvent } from "../storage/EventStore.js"
import { overPayloadLimit } from "./Validation.js"

/**
 * A batch body read in one pass over its text, without `JSON.parse`: the syntax checked as strictly as the
 * parser checks it, repeated keys found, and each event taken straight into the row it is stored as, its
 * payload kept as the text it was sent in (jsonb parses it; nothing here builds its objects or writes it
 * out again).
 *
 * Only the common case is answered. An item with anything unusual — a field written with escapes, a
 * missing or invalid field, a payload with an exponent, a `\u0000` or a surrogate written as an escape, or
 * one near the size limit — is handed back as its own text, for the usual path (parse, schema) to validate.
 * A body with anything unusual as a whole — not JSON, a key twice in one object, nesting deeper than
 * `MAX_DEPTH`, an object of more than `MAX_KEYS` keys or with an escaped key, not a batch's shape — is
 * `undefined`: the usual path reads it all, with its exact answers; so is text with a lone surrogate.
 * (test/aggregator/ingest/batch-scan.test.ts holds it to the usual path on generated bodies.)
 */
export const scanBatch = (body: string, maxPayloadBytes: number): Array<NewEvent | string> | undefined => {
  // Decoded UTF-8 always is; any other text with a lone surrogate goes the usual way (one-byte text: no cost).
  if (!body.isWellFormed()) return undefined
  text = body
  n = body.length
  pos = 0
  keyStart.length = 0
  keyEnd.length = 0
  lastTopic = lastSource = topicChecked = sourceChecked = undefined
  try {
    return batch(maxPayloadBytes)
  } finally {
    text = ""
    lastTopic = lastSource = topicChecked = sourceChecked = undefined
  }
}

const MAX_DEPTH = 60
const MAX_KEYS = 64
// a longer number may not be finite as a double (1e309 is Infinity): the usual path decides
const MAX_NUMBER_LENGTH = 300

// The scan is synchronous, so one set of state serves every call.
let text = ""
let n = 0
let pos = 0
/** set by `string`: it held an escape */
let escaped = false
/** set while scanning a value: something in it only the usual path can judge */
let unusual = false
/** the open objects' keys, as spans of the text between their quotes */
const keyStart: Array<number> = []
const keyEnd: Array<number> = []
/** the span of the key `key` read last */
let keyFrom = 0
let keyTo = 0

// Topics and sources mostly repeat from one event to the next: the same text is the same string, checked once.
let lastTopic: string | undefined
let lastSource: string | undefined
let topicChecked: string | undefined
let sourceChecked: string | null | undefined

/** The string between `start` and `end`: `last` itself when it has the same text. */
const repeated = (last: string | undefined, start: number, end: number): string =>
  last !== undefined && last.length === end - start && text.startsWith(last, start) ? last : text.slice(start, end)

const isDigit = (c: number) => c >= 0x30 && c <= 0x39

const hexValue = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1

const space = () => {
  for (; pos < n; pos++) {
    const c = text.charCodeAt(pos)
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return
  }
}

/** At a `"`: moves past the string's closing quote; false when it is not a JSON string. */
const string = (): boolean => {
  escaped = false
  for (pos++; pos < n;) {
    const c = text.charCodeAt(pos)
    if (c === 0x22) {
      pos++
      return true
    }
    if (c < 0x20) return false
    if (c !== 0x5c) {
      pos++
      continue
    }
    escaped = true
    const e = text.charCodeAt(pos + 1)
    if (e === 0x75 /* u */) {
      let v = 0
      for (let k = 2; k < 6; k++) {
        const h = hexValue(text.charCodeAt(pos + k))
        if (h < 0) return false
        v = v * 16 + h
      }
      // NUL and surrogates written as escapes: whether they are storable is the usual path's question
      if (v === 0 || (v >= 0xd800 && v <= 0xdfff)) unusual = true
      pos += 6
    } else if (e === 0x22 || e === 0x5c || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) {
      pos += 2
    } else {
      return false
    }
  }
  return false
}

const number = (): boolean => {
  const start = pos
  if (text.charCodeAt(pos) === 0x2d) pos++
  const first = text.charCodeAt(pos)
  if (first === 0x30) pos++
  else if (first >= 0x31 && first <= 0x39) while (isDigit(text.charCodeAt(++pos)));
  else return false
  if (text.charCodeAt(pos) === 0x2e) {
    if (!isDigit(text.charCodeAt(++pos))) return false
    while (isDigit(text.charCodeAt(++pos)));
  }
  const e = text.charCodeAt(pos)
  if (e === 0x65 || e === 0x45) {
    // its written length says nothing of its length as JSON, nor whether it is finite
    unusual = true
    const sign = text.charCodeAt(++pos)
    if (sign === 0x2b || sign === 0x2d) pos++
    if (!isDigit(text.charCodeAt(pos))) return false
    while (isDigit(text.charCodeAt(++pos)));
  }
  if (pos - start > MAX_NUMBER_LENGTH) unusual = true
  return true
}

/** At `{` or `[`: moves past it and any space; true when it closes at once with `close` (then past that too). */
const opensEmpty = (close: number): boolean => {
  pos++
  space()
  if (text.charCodeAt(pos) !== close) return false
  pos++
  return true
}

const MORE = 0, END = 1, INVALID = 2

/** After a member of an object or array: a `,` and more to come, its closing `close`, or anything else. */
const afterMember = (close: number): number => {
  space()
  const c = text.charCodeAt(pos++)
  if (c === close) return END
  if (c !== 0x2c) return INVALID
  space()
  return MORE
}

const literal = (word: string): boolean => {
  if (!text.startsWith(word, pos)) return false
  pos += word.length
  return true
}

const sameSpan = (a: number, aEnd: number, b: number, bEnd: number): boolean => {
  if (aEnd - a !== bEnd - b) return false
  for (; a < aEnd; a++, b++) if (text.charCodeAt(a) !== text.charCodeAt(b)) return false
  return true
}

/** At `"`: reads a key of the object whose keys start at `first` into the open keys; false to give up. */
const key = (first: number): boolean => {
  const start = pos + 1
  if (!string() || escaped) return false
  const end = pos - 1
  if (keyStart.length - first >= MAX_KEYS) return false
  for (let k = first; k < keyStart.length; k++) if (sameSpan(keyStart[k], keyEnd[k], start, end)) return false
  keyStart.push(start)
  keyEnd.push(end)
  keyFrom = start
  keyTo = end
  return true
}

/** At `"`: a key of the object whose keys start at `first`, and the `:` after it; false to give up. */
const memberKey = (first: number): boolean => {
  if (text.charCodeAt(pos) !== 0x22 || !key(first)) return false
  space()
  if (text.charCodeAt(pos) !== 0x3a) return false
  pos++
  space()
  return true
}

/** Any JSON value at `pos`, `depth` containers deep; false to give up on the body. */
const value = (depth: number): boolean => {
  const c = text.charCodeAt(pos)
  if (c === 0x22) return string()
  if (c === 0x7b) return object(depth + 1)
  if (c === 0x5b) return array(depth + 1)
  if (c === 0x74) return literal("true")
  if (c === 0x66) return literal("false")
  if (c === 0x6e) return literal("null")
  return c === 0x2d || isDigit(c) ? number() : false
}

const object = (depth: number): boolean => {
  if (depth > MAX_DEPTH) return false
  if (opensEmpty(0x7d)) return true
  const first = keyStart.length
  for (;;) {
    if (!memberKey(first) || !value(depth)) return false
    const next = afterMember(0x7d)
    if (next === END) break
    if (next === INVALID) return false
  }
  keyStart.length = first
  keyEnd.length = first
  return true
}

const array = (depth: number): boolean => {
  if (depth > MAX_DEPTH) return false
  if (opensEmpty(0x5d)) return true
  for (;;) {
    if (!value(depth)) return false
    const next = afterMember(0x5d)
    if (next !== MORE) return next === END
  }
}

/** Which event field a key names (by its span), or 0 for another key. */
const fieldOf = (start: number, end: number): number => {
  const length = end - start
  const c = text.charCodeAt(start)
  if (length === 5 && c === 0x74 && text.startsWith("topic", start)) return TOPIC
  if (length === 8 && c === 0x65 && text.startsWith("event_id", start)) return EVENT_ID
  if (length === 9 && c === 0x74 && text.startsWith("timestamp", start)) return TIMESTAMP
  if (length === 6 && c === 0x73 && text.startsWith("source", start)) return SOURCE
  if (length === 7 && c === 0x70 && text.startsWith("payload", start)) return PAYLOAD
  return 0
}
const TOPIC = 1, EVENT_ID = 2, TIMESTAMP = 3, SOURCE = 4, PAYLOAD = 5

/** One item of the batch at `pos`: its row, its text for the usual path, or undefined to give up on the body. */
const item = (depth: number, maxPayloadBytes: number): NewEvent | string | undefined => {
  const start = pos
  if (text.charCodeAt(pos) !== 0x7b) return value(depth) ? text.slice(start, pos) : undefined
  let topic: string | undefined, eventId: string | undefined, timestamp: string | undefined
  let source: string | null = null, payload: string | null = null
  let hasSource = false
  let plain = true
  const first = keyStart.length
  if (opensEmpty(0x7d)) {
    plain = false
  } else {
    for (;;) {
      if (!memberKey(first)) return undefined
      const field = fieldOf(keyFrom, keyTo)
      const at = pos
      if (field === 0 || field === PAYLOAD) {
        unusual = false
        if (!value(depth + 1)) return undefined
        if (field === PAYLOAD) {
          if (unusual) plain = false
          payload = text.slice(at, pos)
        }
      } else if (text.charCodeAt(pos) === 0x22) {
        if (!string()) return undefined
        if (escaped) plain = false
        if (field === TOPIC) topic = lastTopic = repeated(lastTopic, at + 1, pos - 1)
        else if (field === EVENT_ID) eventId = text.slice(at + 1, pos - 1)
        else if (field === TIMESTAMP) timestamp = text.slice(at + 1, pos - 1)
        else {
          source = lastSource = repeated(lastSource, at + 1, pos - 1)
          hasSource = true
        }
      } else {
        // a field that is not a string: the usual path names the problem
        if (!value(depth + 1)) return undefined
        plain = false
      }
      const next = afterMember(0x7d)
      if (next === END) break
      if (next === INVALID) return undefined
    }
  }
  keyStart.length = first
  keyEnd.length = first
  if (!plain || topic === undefined || eventId === undefined || timestamp === undefined) return text.slice(start, pos)
  if (topic !== topicChecked) {
    if (topicProblem(topic) !== undefined) return text.slice(start, pos)
    topicChecked = topic
  }
  if (eventIdProblem(eventId) !== undefined) return text.slice(start, pos)
  if (hasSource && source !== sourceChecked) {
    if (sourceProblem(source!) !== undefined) return text.slice(start, pos)
    sourceChecked = source
  }
  const utcIso = timestampUtcIso(timestamp)
  if (utcIso === undefined) return text.slice(start, pos)
  // Without exponents the text as written is at least as long as the parser's JSON of it (which the limit
  // is about), so within the limit here is within it there; over it, the usual path measures exactly.
  if (payload !== null && overPayloadLimit(payload, maxPayloadBytes)) return text.slice(start, pos)
  return { topic, event_id: eventId, timestamp: utcIso, source, payload }
}

/** The items of `[…]` at `pos`, `depth` containers deep. */
const items = (depth: number, maxPayloadBytes: number): Array<NewEvent | string> | undefined => {
  const out: Array<NewEvent | string> = []
  if (opensEmpty(0x5d)) return out
  for (;;) {
    const found = item(depth, maxPayloadBytes)
    if (found === undefined) return undefined
    out.push(found)
    const next = afterMember(0x5d)
    if (next !== MORE) return next === END ? out : undefined
  }
}

/** `[…]` or `{"events": […], …}`, and nothing after it. */
const batch = (maxPayloadBytes: number): Array<NewEvent | string> | undefined => {
  space()
  let found: Array<NewEvent | string> | undefined
  const c = text.charCodeAt(pos)
  if (c === 0x5b) {
    found = items(1, maxPayloadBytes)
  } else if (c === 0x7b) {
    if (opensEmpty(0x7d)) return undefined
    for (;;) {
      if (!memberKey(0)) return undefined
      if (keyTo - keyFrom === 6 && text.startsWith("events", keyFrom)) {
        if (text.charCodeAt(pos) !== 0x5b) return undefined
        found = items(2, maxPayloadBytes)
        if (found === undefined) return undefined
      } else if (!value(1)) {
        return undefined
      }
      const next = afterMember(0x7d)
      if (next === END) break
      if (next === INVALID) return undefined
    }
  }
  if (found === undefined) return undefined
  space()
  return pos === n ? found : undefined
}
