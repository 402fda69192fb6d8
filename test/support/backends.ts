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
