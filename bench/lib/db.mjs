import pg from "pg"

/** One statement on a connection of its own, closed afterwards (the bench scripts' database chores). */
export const query = async (url, sql, params) => {
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  try {
    return await c.query(sql, params)
  } finally {
    await c.end()
  }
}
