// The one results table, and the "Latest run" section of BENCHMARKS.md.
import { existsSync, readFileSync, writeFileSync } from "node:fs"

const escape = (s) => String(s ?? "").replaceAll("|", "\\|")

/** A markdown table; `rows` are arrays of cells in `columns` order. */
export const markdownTable = (columns, rows) => {
  const line = (cells) => `| ${cells.map(escape).join(" | ")} |`
  return [line(columns), line(columns.map(() => "---")), ...rows.map(line)].join("\n")
}

export const PREAMBLE = `# Benchmarks

\`npm run bench\` builds the project, starts the aggregator (\`node dist/aggregator\`, its own process) on a fresh
PostgreSQL database, drives it over loopback HTTP with autocannon from the bench process, and prints one table.
Every number in the table comes from the same run on the same machine:

- **the naive reference** (\`bench/reference/naive-server.mjs\`, a measuring stick, not product code): \`node:http\` +
  \`pg\`, one \`INSERT … ON CONFLICT DO NOTHING\` per request, 201/200 by \`rowCount\`, on the aggregator's table and
  indexes, under the same single-event load; the aggregator's rate is read as a ratio of it;
- **single-event \`POST /publish\`** with group commit on and off (a fresh aggregator and a fresh database each),
  64 connections, 12 s after a 3 s warm-up, 30% of requests re-sending an id sent earlier; only 2xx answers count;
- **batch \`POST /publish/batch\`**, 1,000 events a request, 1,000 requests (1M events) on 4 connections, while the
  aggregator's resident memory is sampled from \`/proc/<pid>/status\` every 100 ms (VmRSS, and VmHWM at the end);
- **\`GET /\`** on the same build and settings with the same 64 connections: the HTTP ceiling, no database; and, to
  calibrate the machine, a bare \`node:http\` server answering the same way;
- **the SQL ceiling**: one server-side \`INSERT … SELECT … FROM generate_series … ON CONFLICT DO NOTHING\` of the same
  row shape into the same table, timed from the bench process;
- **embedded** (PGlite, no \`DATABASE_URL\`): three first starts on a new \`DATA_DIR\` alternated with starts on the
  server, then the same single-event and batch loads (\`bench/lib/embedded-phase.mjs\`);
- **the publisher against wrk**: wrk, the publisher's single mode, wrk again on the same aggregator at the same
  concurrency, then batch runs of 1,000,000 and 20,000 events (\`bench/lib/publisher-phase.mjs\`; wrk comes from
  Debian's \`wrk\` package);
- **\`GET /stats\`** after seeding the table server-side to 10M rows over 1,000 topics (\`--quick\` / \`BENCH_QUICK=1\`:
  1M), with 1 connection (the latency the target is read at) and with 8; on the same table **\`GET /topics\`** and
  four **filtered \`GET /events\` pages** (1 connection each, with the CPU each request cost), then
  **\`GET /events/export\`** of 1,000,000 rows seeded into one topic with the aggregator's RSS sampled
  (\`bench/lib/reads-phase.mjs\`; \`node bench/run.mjs --reads-only\` runs only this part).

The CPU column says who used the 2 cores during each phase: the aggregator, PostgreSQL, the bench process, and
the whole machine (anything else running shows as the difference). After each load phase the bench checks that
the rows stored equal the distinct ids the server acknowledged with 201 (requests still in flight when a timed
run stops are reported separately), that no id was acknowledged 201 twice or answered "duplicate" without being
stored, and that \`event_totals\` sums to \`count(*)\`; a ✗ means the benchmark or the server is broken, and the run
exits non-zero. \`BENCH_PROFILE=1\` (or \`batch\`, \`all\`) runs the aggregator under \`node --cpu-prof\` and prints
the top self time by function, file and package for each phase; \`node bench/profile-summary.mjs\` reads any
.cpuprofile (\`--window\` for one phase, \`--callers <function>\` for who calls it). Durations, connection counts
and sizes can be changed with \`BENCH_*\` variables (see bench/run.mjs); aggregator settings in the environment
(\`FLUSH_CONCURRENCY\`, \`DB_POOL_SIZE\`, …) reach every aggregator the bench starts and are named in the header.

The machine is small (2 cores shared by the aggregator, PostgreSQL and the load generator), so absolute numbers
are far below a server's; the ratios are what the targets are about.
`

/** Replaces the "## Latest run" section of BENCHMARKS.md (everything from that heading to the next "## "). */
export const writeLatestRun = (file, section) => {
  const body = `## Latest run\n\n${section.trim()}\n`
  if (!existsSync(file)) {
    writeFileSync(file, `${PREAMBLE}\n${body}`)
    return
  }
  const text = readFileSync(file, "utf8")
  const start = text.indexOf("## Latest run")
  if (start < 0) {
    writeFileSync(file, `${text.trimEnd()}\n\n${body}`)
    return
  }
  const nextHeading = text.indexOf("\n## ", start + 1)
  const rest = nextHeading < 0 ? "" : `\n${text.slice(nextHeading + 1)}`
  writeFileSync(file, `${text.slice(0, start)}${body}${rest}`)
}
