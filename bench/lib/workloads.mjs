// The HTTP load phases, driven by autocannon in this process, and the checks that each phase stored
// exactly what the server acknowledged.
import autocannon from "autocannon"

const BASE_TS = Date.UTC(2025, 0, 31, 12, 0, 0)
const pad = (n) => String(n).padStart(10, "0")

// Deterministic per number, so a re-send is byte-for-byte the same event.
const eventJson = (topic, prefix, n) =>
  `{"topic":"${topic}","event_id":"${prefix}-${pad(n)}","timestamp":"${new Date(BASE_TS + n).toISOString()}",` +
  `"source":"bench","payload":{"n":${n},"user":"u${n % 1000}","amount":42.5,"tags":["a","b"]}}`

const JSON_HEADERS = { "content-type": "application/json" }

const run = (opts) =>
  autocannon({ timeout: 30, ...opts }).then((r) => {
    const codes = {}
    for (const [code, { count }] of Object.entries(r.statusCodeStats ?? {})) codes[code] = Number(count)
    const ok = Object.entries(codes).filter(([c]) => c >= 200 && c < 300).reduce((a, [, n]) => a + n, 0)
    const other = Object.entries(codes).filter(([c]) => !(c >= 200 && c < 300)).reduce((a, [, n]) => a + n, 0)
    return {
      duration: r.duration,
      ok,
      non2xx: other,
      codes,
      errors: r.errors,
      timeouts: r.timeouts,
      p50: r.latency.p50,
      p99: r.latency.p99,
      max: r.latency.max
    }
  })

const describeCodes = (codes) =>
  Object.entries(codes).filter(([c]) => !(c >= 200 && c < 300)).map(([c, n]) => `${n}×${c}`).join(", ")

/**
 * Single-event POST /publish: each request is a new id (share 1 − dupShare) or a re-send of an id sent
 * before (dupShare). Counts every response by id, so the check can compare the table with the answers.
 */
export const singleEvent = async ({ url, topic, prefix = "e", connections, duration, dupShare }) => {
  const sent = [] // numbers of new ids, in send order
  const unanswered = new Map() // number → requests sent and not yet answered
  const acked201 = new Set()
  const acked200 = new Set()
  let double201 = 0
  let resends = 0
  const res = await run({
    url,
    connections,
    duration,
    requests: [{
      method: "POST",
      path: "/publish",
      headers: JSON_HEADERS,
      setupRequest: (req, ctx) => {
        let n
        if (sent.length > 0 && Math.random() < dupShare) {
          n = sent[Math.floor(Math.random() * sent.length)]
          resends++
        } else {
          n = sent.length
          sent.push(n)
        }
        ctx.n = n
        unanswered.set(n, (unanswered.get(n) ?? 0) + 1)
        req.body = eventJson(topic, prefix, n)
        return req
      },
      onResponse: (status, _body, ctx) => {
        const n = ctx.n
        const left = unanswered.get(n) - 1
        if (left === 0) unanswered.delete(n)
        else unanswered.set(n, left)
        if (status === 201) {
          if (acked201.has(n)) double201++
          acked201.add(n)
        } else if (status === 200) {
          acked200.add(n)
        }
      }
    }]
  })
  return {
    ...res,
    eventsPerSec: res.ok / res.duration,
    sentNew: sent.length,
    resends,
    verify: (storedIds) => verifySingle({ storedIds, prefix, acked201, acked200, unanswered, double201 })
  }
}

const verifySingle = ({ storedIds, prefix, acked201, acked200, unanswered, double201 }) => {
  const stored = new Set()
  let foreign = 0
  for (const id of storedIds) {
    const m = /^(.+)-(\d{10})$/.exec(id)
    if (!m || m[1] !== prefix) foreign++
    else stored.add(Number(m[2]))
  }
  let lost = 0 // acknowledged 201 but not in the table
  for (const n of acked201) if (!stored.has(n)) lost++
  let phantomDup = 0 // answered "duplicate" for an id the table does not hold
  for (const n of acked200) if (!stored.has(n)) phantomDup++
  let cutOff = 0 // stored, not acknowledged 201, but a request for it was still unanswered when the run stopped
  let unexplained = 0
  for (const n of stored) {
    if (acked201.has(n)) continue
    if (unanswered.has(n)) cutOff++
    else unexplained++
  }
  const ok = lost === 0 && phantomDup === 0 && unexplained === 0 && foreign === 0 && double201 === 0
  const problems = [
    lost && `${lost} acknowledged 201 but missing`,
    phantomDup && `${phantomDup} answered duplicate but missing`,
    unexplained && `${unexplained} stored but never acknowledged`,
    foreign && `${foreign} unknown ids`,
    double201 && `${double201} ids acknowledged 201 twice`
  ].filter(Boolean)
  return {
    ok,
    rows: storedIds.length,
    text: `rows ${fmt(storedIds.length)} = distinct 201-acked ids ${fmt(acked201.size)}` +
      (cutOff ? ` + ${cutOff} in flight at cut-off` : "") + (ok ? " ✓" : ` ✗ (${problems.join("; ")})`)
  }
}

/** POST /publish/batch with `batchSize` new events a request, `amount` requests in all (0 = run for `duration`). */
export const batch = async ({ url, topic, prefix = "b", connections, amount, duration, batchSize }) => {
  let next = 0
  let processed = 0
  let duplicates = 0
  let unanswered = 0
  const res = await run({
    url,
    connections,
    ...(amount ? { amount } : { duration }),
    requests: [{
      method: "POST",
      path: "/publish/batch",
      headers: JSON_HEADERS,
      setupRequest: (req) => {
        const parts = new Array(batchSize)
        for (let i = 0; i < batchSize; i++) parts[i] = eventJson(topic, prefix, next++)
        req.body = `{"events":[${parts.join(",")}]}`
        unanswered++
        return req
      },
      onResponse: (status, body) => {
        unanswered--
        if (status !== 200) return
        const m = /"processed":(\d+),"duplicates":(\d+)/.exec(body.slice(0, 200))
        if (m) {
          processed += Number(m[1])
          duplicates += Number(m[2])
        }
      }
    }]
  })
  return {
    ...res,
    eventsPerSec: processed / res.duration,
    processed,
    verify: (rows) => {
      const ok = unanswered === 0 ? rows === processed && duplicates === 0 : rows >= processed && rows <= next
      return {
        ok,
        rows,
        text: `rows ${fmt(rows)} = processed ${fmt(processed)} of ${fmt(next)} sent` +
          (unanswered ? ` (${unanswered} batches unanswered at cut-off)` : "") + (ok ? " ✓" : " ✗")
      }
    }
  }
}

/** GET `path` with a fixed number of connections for `duration` seconds; `check` sees the first 2xx body. */
export const getLoad = async ({ url, path, connections, duration, check }) => {
  let firstBody
  const res = await run({
    url,
    connections,
    duration,
    requests: [{
      method: "GET",
      path,
      ...(check
        ? {
          onResponse: (status, body) => {
            if (firstBody === undefined && status === 200) firstBody = body
          }
        }
        : {})
    }]
  })
  return { ...res, perSec: res.ok / res.duration, firstBody }
}

export const fmt = (n, digits = 0) =>
  n === undefined || Number.isNaN(n) ? "—" : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

export { describeCodes }
