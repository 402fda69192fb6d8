import { randomBytes } from "node:crypto"
import pg from "pg"

/** The server the tests create their throwaway databases on (CI: the local PostgreSQL). */
export const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

const withUrlDatabase = (url: string, database: string) => {
  const u = new URL(url)
  u.pathname = `/${database}`
  return u.toString()
}

const admin = async <A>(f: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: adminUrl })
  await client.connect()
  try {
    return await f(client)
  } finally {
    await client.end()
  }
}

/** A new, empty database; `drop` removes it (and any connection still open to it). */
export const freshDatabase = async (label = "t") => {
  // random, not the pid: parallel test processes and earlier runs' leftovers never collide
  const name = `la_${label}_${Date.now().toString(36)}_${randomBytes(6).toString("hex")}`
  await admin((c) => c.query(`CREATE DATABASE ${name}`))
  return {
    name,
    url: withUrlDatabase(adminUrl, name),
    drop: () => admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).then(() => undefined)
  }
}

/** Runs one query on a database directly, bypassing the aggregator. */
export const query = async <R extends pg.QueryResultRow = any>(url: string, text: string, values: Array<unknown> = []) => {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return (await client.query<R>(text, values)).rows
  } finally {
    await client.end()
  }
}
