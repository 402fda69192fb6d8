import * as Context from "effect/Context"

/** How busy the database connections are, read when metrics are scraped. */
export interface PoolUsage {
  readonly max: number
  readonly inUse: number
  readonly idle: number
  /** Queries waiting for a connection; undefined where the client cannot tell (PGlite). */
  readonly waiting: number | undefined
}

/** Provided next to the SqlClient by each database backend. */
export class DbPool extends Context.Tag("Aggregator/DbPool")<DbPool, { readonly usage: () => PoolUsage }>() {}
