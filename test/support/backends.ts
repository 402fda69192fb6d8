import * as net from "node:net"
import pg from "pg"
import { adminUrl } from "./database.js"

/** CI must run everything: there a missing server is a failure, never a skip. */
export const inCI = process.env.CI === "true"

const reachable = async (connect: () => Promise<void>) => {
  try {
    await connect()
    return true
  } catch {
    return false
  }
}

export const postgresReachable = await reachable(async () => {
  const c = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 2000 })
  await c.connect()
  await c.end()
})

/** Skip tests that need a PostgreSQL server only off CI, and say so. */
export const skipWithoutPostgres = !inCI && !postgresReachable
export const withoutPostgresNote = skipWithoutPostgres
  ? ` [SKIPPED: no PostgreSQL server at ${new URL(adminUrl).host}; set TEST_DATABASE_URL or start one — CI never skips]`
  : ""

/** The Redis server the broker tests use (CI: the local one). */
export const redisUrl = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379"

/** Answers whether a Redis server at `url` replies to PING, within `timeoutMs`. */
export const pingRedis = (url: string, timeoutMs = 2000) =>
  new Promise<boolean>((resolve) => {
    const { hostname, port } = new URL(url)
    const socket = net.connect(Number(port || 6379), hostname)
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => done(false))
    socket.on("error", () => done(false))
    socket.on("connect", () => socket.write("PING\r\n"))
    socket.on("data", (d) => done(d.toString().startsWith("+PONG")))
  })

export const redisReachable = await pingRedis(redisUrl)

/** Skip tests that need a Redis server only off CI, and say so. */
export const skipWithoutRedis = !inCI && !redisReachable
export const withoutRedisNote = skipWithoutRedis
  ? ` [SKIPPED: no Redis server at ${new URL(redisUrl).host}; set TEST_REDIS_URL or start one — CI never skips]`
  : ""

// Said once per test file, so a skipped group is never silent.
if (skipWithoutPostgres) console.warn(`[tests]${withoutPostgresNote}`)
if (skipWithoutRedis) console.warn(`[tests]${withoutRedisNote}`)
