import { Effect } from "effect"
import { apiKey, E2e } from "./target.js"

export interface Answer {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  /** The body parsed as JSON, or undefined when it is not JSON. */
  readonly json: any
}

/** The text parsed as JSON, or undefined when it is not JSON. */
export const parseJson = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A server that never answers fails the case here rather than at the test timeout. */
const ANSWER_WITHIN_MS = 20_000

/**
 * With `API_KEY` set, every request but a read carries it as the bearer key (unless the case sets its own
 * `authorization`); reads go without one, so they prove reads stay open.
 */
const withKey = (init: RequestInit): RequestInit => {
  const method = (init.method ?? "GET").toUpperCase()
  if (apiKey === undefined || method === "GET" || method === "HEAD") return init
  const headers = new Headers(init.headers)
  if (!headers.has("authorization")) headers.set("authorization", `Bearer ${apiKey}`)
  return { ...init, headers }
}

/** A raw request to the aggregator under test, for what the typed client cannot send. */
export const send = (path: string, init: RequestInit = {}) =>
  Effect.flatMap(E2e, ({ url }) =>
    Effect.promise(async (): Promise<Answer> => {
      const signal = AbortSignal.timeout(ANSWER_WITHIN_MS)
      const res = await fetch(`${url}${path}`, { signal, ...withKey(init) }).catch((e) => {
        throw signal.aborted ? new Error(`${init.method ?? "GET"} ${path}: no answer within ${ANSWER_WITHIN_MS} ms`) : e
      })
      const text = await res.text()
      return { status: res.status, headers: res.headers, text, json: parseJson(text) }
    }))

/** POSTs `body` (JSON-encoded unless it is already a string or bytes) as application/json. */
export const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  send(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body)
  })

export const get = (path: string) => send(path)

/** The `authorization` header a case's own `fetch` needs to publish (empty without `API_KEY`). */
export const authHeader: Record<string, string> = apiKey === undefined ? {} : { authorization: `Bearer ${apiKey}` }

/** A path segment as the router expects it. */
export const seg = encodeURIComponent

export const eventPath = (topic: string, eventId: string) => `/events/${seg(topic)}/${seg(eventId)}`

const run = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`
let counter = 0

/** A topic no earlier run and no other case uses, so the suite can run again against the same server. */
export const uniqueTopic = (label: string) => `e2e-${label}-${run}-${process.pid}-${counter++}`

export const TIMESTAMP = "2025-03-04T05:06:07.123456Z"

export const event = (topic: string, event_id: string, extra: Record<string, unknown> = {}) => ({
  topic,
  event_id,
  timestamp: TIMESTAMP,
  ...extra
})
