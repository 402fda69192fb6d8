import { type ChildProcess, spawn } from "node:child_process"
import * as net from "node:net"
import type { StoredEvent } from "../../src/domain/Event.js"
import { pingRedis } from "./backends.js"

/** Kept here too for the tests that import it from this file; the harness owns it. */
export { freePort } from "./aggregator.js"

export const until = async (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000) => {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** A throwaway redis-server of this test's own on `port`, without persistence; never the shared one. */
export const privateRedis = async (port: number) => {
  const child: ChildProcess = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"], {
    stdio: "ignore"
  })
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  await until(`redis-server on ${port}`, () => pingRedis(`redis://127.0.0.1:${port}`, 500))
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: async () => {
      child.kill("SIGKILL")
      await exited
    }
  }
}

/** A live-tail client: collects the events and comments of `GET url` as Server-Sent Events. */
export const sseClient = (url: string) => {
  const events: Array<StoredEvent> = []
  const ids: Array<string> = []
  let comments = 0
  let status = 0
  let contentType = ""
  const controller = new AbortController()
  let subscribed!: () => void
  const ready = new Promise<void>((resolve) => (subscribed = resolve))
  const ended = (async () => {
    const res = await fetch(url, { signal: controller.signal })
    status = res.status
    contentType = res.headers.get("content-type") ?? ""
    if (res.body === null) return
    const decoder = new TextDecoder()
    let text = ""
    try {
      for await (const chunk of res.body) {
        text += decoder.decode(chunk, { stream: true })
        let end: number
        while ((end = text.indexOf("\n\n")) >= 0) {
          const frame = text.slice(0, end)
          text = text.slice(end + 2)
          for (const line of frame.split("\n")) {
            if (line.startsWith(":")) {
              comments++
              if (line.startsWith(": subscribed")) subscribed()
            } else if (line.startsWith("id: ")) ids.push(line.slice(4))
            else if (line.startsWith("data: ")) events.push(JSON.parse(line.slice(6)))
          }
        }
      }
    } catch (e) {
      if (!controller.signal.aborted) throw e
    }
  })()
  ended.catch(() => {})
  return {
    events,
    ids,
    ready: Promise.race([ready, ended.then(() => Promise.reject(new Error(`stream ${url} ended before subscribing`)))]),
    ended,
    get comments() {
      return comments
    },
    get status() {
      return status
    },
    get contentType() {
      return contentType
    },
    close: () => controller.abort()
  }
}

export const keyOf = (e: { readonly topic: string; readonly event_id: string }) => `${e.topic}\u0000${e.event_id}`

/**
 * A TCP proxy on `port` to the PostgreSQL behind `databaseUrl`:
 * until it is started nothing listens on `port`, so a connection there is refused, as to a database that is
 * down; the shared server itself is never touched. `close` also ends the connections it carries.
 */
export const startProxy = (port: number, databaseUrl: string) =>
  new Promise<{ close: () => Promise<void> }>((resolve) => {
    const upstreamAt = new URL(databaseUrl)
    const sockets = new Set<net.Socket>()
    const server = net.createServer((client) => {
      const upstream = net.connect(Number(upstreamAt.port || 5432), upstreamAt.hostname)
      for (const s of [client, upstream]) {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      }
      client.pipe(upstream).pipe(client)
      client.on("error", () => upstream.destroy())
      upstream.on("error", () => client.destroy())
    })
    server.listen(port, "127.0.0.1", () =>
      resolve({
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done())
            for (const s of sockets) s.destroy()
          })
      }))
  })
