import { spawn } from "node:child_process"

// vitest sets MODE=test, and a developer's shell may set others: the publisher must see only its flags.
const publisherEnv = [
  "AGGREGATOR_URL", "EVENTS", "DUPLICATES", "TOPICS", "MODE", "BATCH_SIZE", "CONCURRENCY", "RATE", "SEED", "VERIFY",
  "JSON_SUMMARY", "REQUEST_TIMEOUT", "READY_TIMEOUT", "MAX_RETRIES", "SPOT_CHECK", "STATS_SETTLE", "PROGRESS_INTERVAL",
  "API_KEY", "REPORT_FILE"
]
const cleanEnv = () => Object.fromEntries(Object.entries(process.env).filter(([k]) => !publisherEnv.includes(k)))

/**
 * `node dist/publisher` with the given flags; its environment cleared of the publisher's own settings, then
 * given `env`. `stderr()` is what it has written there so far, for waiting on a line while it runs.
 */
export const startPublisher = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const child = spawn(process.execPath, ["dist/publisher", ...args], {
    env: { ...cleanEnv(), ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let stdout = "", stderr = ""
  child.stdout.on("data", (d) => (stdout += d))
  child.stderr.on("data", (d) => (stderr += d))
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    child.on("error", reject)
    child.on("close", (code) => resolve({ code, stdout, stderr }))
  })
  return { child, stderr: () => stderr, done }
}

/** `startPublisher` run to its end. */
export const runPublisher = (args: ReadonlyArray<string>, env: Record<string, string> = {}) => startPublisher(args, env).done
