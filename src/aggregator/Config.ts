import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { fileURLToPath } from "node:url"

const positiveInt = (name: string, fallback: number) =>
  Config.integer(name).pipe(
    Config.validate({ message: `${name} must be a positive integer`, validation: (n) => n > 0 }),
    Config.withDefault(fallback)
  )

const units: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `30d`, `12h`, `15m`, `90s` or `500ms` as a Duration; undefined for anything else (0 included). */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(text.trim())
  if (m === null || Number(m[1]) === 0 || !Number.isSafeInteger(Number(m[1]) * units[m[2]])) return undefined
  return Duration.millis(Number(m[1]) * units[m[2]])
}

/** An optional duration setting: unset or empty is none. */
const optionalDuration = (name: string) =>
  Config.string(name).pipe(
    Config.withDefault(""),
    Config.mapOrFail((text) => {
      if (text.trim() === "") return Either.right(Option.none<Duration.Duration>())
      const duration = parseDuration(text)
      return duration === undefined
        ? Either.left(ConfigError.InvalidData([name], `${name} must be a positive duration such as 30d, 12h, 15m or 90s, got '${text}'`))
        : Either.right(Option.some(duration))
    })
  )

const logLevels = new Map<string, LogLevel.LogLevel>([
  ["all", LogLevel.All],
  ["trace", LogLevel.Trace],
  ["debug", LogLevel.Debug],
  ["info", LogLevel.Info],
  ["warn", LogLevel.Warning],
  ["warning", LogLevel.Warning],
  ["error", LogLevel.Error],
  ["fatal", LogLevel.Fatal],
  ["critical", LogLevel.Fatal],
  ["off", LogLevel.None],
  ["none", LogLevel.None]
])

/**
 * A log level as people write it, in any case: `warning` and `warn` (Python's and Effect's), `info`, `Debug`,
 * `ERROR`, `critical` as `fatal`, `off` or `none`, `all`.
 */
export const logLevel = (name: string) =>
  Config.string(name).pipe(
    Config.mapOrFail((text) => {
      const level = logLevels.get(text.trim().toLowerCase())
      return level === undefined
        ? Either.left(ConfigError.InvalidData([], `${name} must be one of ${[...logLevels.keys()].join(", ")} (any case), not ${JSON.stringify(text)}`))
        : Either.right(level)
    })
  )

/** Every setting of the aggregator, read once from the environment. */
export class AggregatorConfig extends Effect.Service<AggregatorConfig>()("Aggregator/Config", {
  effect: Effect.gen(function*() {
    const databaseUrl = yield* Config.option(Config.redacted("DATABASE_URL"))
    // without DATABASE_URL the database is PGlite, in this process
    const embedded = Option.isNone(databaseUrl)
    return {
      // 0 asks the OS for a free port (tests)
      port: yield* Config.integer("PORT").pipe(
        Config.validate({ message: "PORT must be 0–65535", validation: (n) => n >= 0 && n <= 65535 }),
        Config.withDefault(8080)
      ),
      host: yield* Config.string("HOST").pipe(Config.withDefault("0.0.0.0")),
      databaseUrl,
      embedded,
      // comma-separated; when it holds any key, the publish routes need `Authorization: Bearer <key>`
      apiKeys: yield* Config.redacted("API_KEYS").pipe(
        Config.map((keys) => Redacted.value(keys).split(",").map((k) => k.trim()).filter((k) => k !== "")),
        Config.validate({
          message: "API_KEYS must be comma-separated keys without whitespace inside a key",
          validation: (keys) => keys.every((k) => /^\S+$/.test(k))
        }),
        Config.map((keys) => keys.map((k) => Redacted.make(k))),
        Config.withDefault<ReadonlyArray<Redacted.Redacted<string>>>([])
      ),
      // the embedded PostgreSQL (PGlite) keeps its files here when DATABASE_URL is unset; "memory://" keeps none
      dataDir: yield* Config.string("DATA_DIR").pipe(Config.withDefault("./data")),
      // PGlite touches its whole shared_buffers at start: this is most of its resident memory
      pgliteSharedBuffers: yield* Config.string("PGLITE_SHARED_BUFFERS").pipe(
        Config.validate({ message: "PGLITE_SHARED_BUFFERS must be a size such as 16MB", validation: (v) => /^\d+(kB|MB|GB)$/.test(v) }),
        Config.withDefault("16MB")
      ),
      pgliteLiftoffOnly: yield* Config.boolean("PGLITE_LIFTOFF_ONLY").pipe(Config.withDefault(true)),
      // a new DATA_DIR starts as a copy of this directory (made by `npm run build`) instead of running initdb;
      // from src/ and from dist/ alike it is <project>/dist/pgdata-template. "" always runs initdb.
      pgliteTemplate: yield* Config.string("PGLITE_TEMPLATE").pipe(
        Config.withDefault(fileURLToPath(new URL("../../dist/pgdata-template", import.meta.url)))
      ),
      dbPoolSize: yield* positiveInt("DB_POOL_SIZE", 10),
      maxBodyBytes: yield* positiveInt("MAX_BODY_BYTES", 1024 * 1024),
      // a client must send its headers within HEADERS_TIMEOUT_MS and its whole request within REQUEST_TIMEOUT_MS (else 408)
      headersTimeoutMs: yield* positiveInt("HEADERS_TIMEOUT_MS", 10_000),
      requestTimeoutMs: yield* positiveInt("REQUEST_TIMEOUT_MS", 30_000),
      // open connections beyond this are closed as they arrive
      maxConnections: yield* positiveInt("MAX_CONNECTIONS", 2_048),
      // after an answer given before the body arrived (413, 401…), the rest is read and discarded for at most
      // this long and this many bytes before the connection closes, so the client reads the answer, not a reset
      lingerMs: yield* positiveInt("LINGER_MS", 5_000),
      lingerMaxBytes: yield* positiveInt("LINGER_MAX_BYTES", 64 * 1024 * 1024),
      // request bodies still arriving may hold at most this much memory together (429 beyond it)
      bodyBufferBytes: yield* positiveInt("BODY_BUFFER_BYTES", 64 * 1024 * 1024),
      maxBatchEvents: yield* positiveInt("MAX_BATCH_EVENTS", 1000),
      maxPayloadBytes: yield* positiveInt("MAX_PAYLOAD_BYTES", 64 * 1024),
      // a body without Content-Type is a 415 unless this is on (then it is read as JSON, as the Python service did)
      acceptUntypedBodies: yield* Config.boolean("ACCEPT_UNTYPED_BODIES").pipe(Config.withDefault(false)),
      retryAfterSeconds: yield* positiveInt("RETRY_AFTER_SECONDS", 1),
      dbRetryMaxDelayMs: yield* positiveInt("DB_RETRY_MAX_DELAY_MS", 5000),
      // single events in their common case are answered beneath the HTTP framework (http/FastIngest.ts)
      fastIngest: yield* Config.boolean("FAST_INGEST").pipe(Config.withDefault(true)),
      groupCommit: yield* Config.boolean("GROUP_COMMIT").pipe(Config.withDefault(true)),
      flushWindowMs: yield* Config.integer("FLUSH_WINDOW_MS").pipe(
        Config.validate({ message: "FLUSH_WINDOW_MS must be 0 or more", validation: (n) => n >= 0 }),
        Config.withDefault(0)
      ),
      // Under load, a flush waits up to FLUSH_BUSY_WINDOW_MS for the clients the previous one just answered, when
      // that one held at least FLUSH_BUSY_EVENTS events (like PostgreSQL's commit_delay and commit_siblings): fewer,
      // larger commits, and no wait at all while requests come one at a time. 0 turns it off.
      flushBusyWindowMs: yield* Config.integer("FLUSH_BUSY_WINDOW_MS").pipe(
        Config.validate({ message: "FLUSH_BUSY_WINDOW_MS must be 0 or more", validation: (n) => n >= 0 }),
        Config.withDefault(1)
      ),
      flushBusyEvents: yield* positiveInt("FLUSH_BUSY_EVENTS", 8),
      flushMaxEvents: yield* positiveInt("FLUSH_MAX_EVENTS", 1000),
      // PGlite runs one statement at a time, so a second flush in flight would only split the batches
      flushConcurrency: yield* positiveInt("FLUSH_CONCURRENCY", embedded ? 1 : 4),
      // while a flush is in flight, another (up to FLUSH_CONCURRENCY) starts once this many events wait: a
      // commit's three round trips wait on a busy event loop, so overlapping commits keeps clients moving
      flushOverlapEvents: yield* positiveInt("FLUSH_OVERLAP_EVENTS", 16),
      maxPendingEvents: yield* positiveInt("MAX_PENDING_EVENTS", 20_000),
      shutdownTimeoutMs: yield* positiveInt("SHUTDOWN_TIMEOUT_MS", 15_000),
      // on shutdown, how long an idle keep-alive connection may still bring a request before it is closed
      shutdownIdleGraceMs: yield* positiveInt("SHUTDOWN_IDLE_GRACE_MS", 1_000),
      // without it the broker is in-process: live tail and stats cover this process only
      redisUrl: yield* Config.option(Config.redacted("REDIS_URL")),
      // prepended to every Redis key and channel, so deployments (or test runs) can share one Redis
      redisPrefix: yield* Config.string("REDIS_PREFIX").pipe(Config.withDefault("")),
      announceBufferEvents: yield* positiveInt("ANNOUNCE_BUFFER_EVENTS", 10_000),
      // a GET /events answer stops at about this many bytes (at least one event); X-Next-Before continues it
      listMaxBytes: yield* positiveInt("LIST_MAX_BYTES", 1024 * 1024),
      streamHeartbeatMs: yield* positiveInt("STREAM_HEARTBEAT_MS", 15_000),
      // live-tail clients a replica serves at once; more are answered 429
      streamMaxClients: yield* positiveInt("STREAM_MAX_CLIENTS", 1_000),
      // with API_KEYS set, also the event reads (GET /events, /events/stream, /events/:topic/:event_id) need a key
      readsNeedKey: yield* Config.boolean("READS_NEED_KEY").pipe(Config.withDefault(false)),
      streamClientBufferEvents: yield* positiveInt("STREAM_CLIENT_BUFFER_EVENTS", 1_000),
      clusterStatsIntervalMs: yield* positiveInt("CLUSTER_STATS_INTERVAL_MS", 2_000),
      clusterStatsTtlMs: yield* positiveInt("CLUSTER_STATS_TTL_MS", 10_000),
      // events older than this (by received_at) are deleted; none: kept forever
      retention: yield* optionalDuration("RETENTION"),
      // how often expired events are looked for; by default a quarter of RETENTION, between 1 s and 1 min
      retentionInterval: yield* optionalDuration("RETENTION_INTERVAL"),
      // rows one delete statement removes at most (each its own short transaction)
      retentionBatchRows: yield* positiveInt("RETENTION_BATCH_ROWS", 5_000),
      // one `summary` log line this often while events flow
      logSummaryIntervalMs: yield* positiveInt("LOG_SUMMARY_INTERVAL_MS", 5_000)
    } as const
  })
}) {}
