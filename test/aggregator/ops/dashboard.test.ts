import { describe, expect, it, layer } from "@effect/vitest"
import { afterAll, beforeAll } from "vitest"
import { Effect } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import * as http from "node:http"
import type * as net from "node:net"
import { fileURLToPath } from "node:url"
import { type Browser, chromium, type Page } from "playwright-core"
import { aggregatorLayer, postJson, type Spawned, spawnAggregator, TestAggregator, unique, waitFor } from "../../support/aggregator.js"
import {
  inCI,
  redisUrl,
  skipWithoutPostgres,
  skipWithoutRedis,
  withoutPostgresNote,
  withoutRedisNote
} from "../../support/backends.js"
import { freshDatabase, query } from "../../support/database.js"

// GET /dashboard in a real Chromium: the figures, the live tail and the chart against real traffic.

const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium"
const haveChromium = existsSync(chromiumPath)
const skipWithoutChromium = !inCI && !haveChromium
const withoutChromiumNote = skipWithoutChromium
  ? ` [SKIPPED: no Chromium at ${chromiumPath}; install it or set CHROMIUM_PATH — CI never skips]`
  : ""
if (skipWithoutChromium) console.warn(`[tests]${withoutChromiumNote}`)

const chromiumArgs = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic"
]

const screenshotDir = fileURLToPath(new URL("../../../test-results/", import.meta.url))

const waitLong = { timeout: 30_000, interval: 100 }

// ---- what the test sends, and what it therefore expects ----

type Outcome = "processed" | "dropped_duplicate" | "rejected"
interface Sent {
  readonly topic: string
  readonly event_id: string
  readonly expected: Outcome
}

/** The test's own model of the aggregator: a key is stored the first time it is sent, a duplicate after. */
class Ledger {
  readonly keys = new Set<string>()
  readonly stored: Array<{ topic: string; event_id: string }> = []
  received = 0
  duplicates = 0
  rejected = 0

  send(topic: string, event_id: string): Sent {
    this.received++
    const key = `${topic}\u0000${event_id}`
    if (this.keys.has(key)) {
      this.duplicates++
      return { topic, event_id, expected: "dropped_duplicate" }
    }
    this.keys.add(key)
    this.stored.push({ topic, event_id })
    return { topic, event_id, expected: "processed" }
  }

  invalid(): void {
    this.received++
    this.rejected++
  }
}

const topics = ["orders", "payments", "shipments", "inventory"] as const
const sources = ["checkout", "billing", "warehouse", "api-gateway"] as const

const event = (topic: string, event_id: string, n: number) => ({
  topic,
  event_id,
  timestamp: new Date(Date.UTC(2025, 0, 31, 12, 0, 0) + n * 137).toISOString().replace("Z", "123Z"),
  source: sources[n % sources.length],
  payload: { amount: (n * 7919) % 500, currency: n % 3 === 0 ? "USD" : "EUR", attempt: 1 }
})

const invalidEvents: ReadonlyArray<unknown> = [
  { topic: "orders", timestamp: "2025-01-31T12:00:00Z" },
  { topic: "orders", event_id: "bad-time", timestamp: "not a time" },
  { topic: "", event_id: "no-topic", timestamp: "2025-01-31T12:00:00Z" },
  { topic: "orders", event_id: 42, timestamp: "2025-01-31T12:00:00Z" }
]

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms))

const publishOne = async (url: string, sent: Sent, n: number, extra: Record<string, unknown> = {}) => {
  const res = await postJson(`${url}/publish`, { ...event(sent.topic, sent.event_id, n), ...extra })
  const body = (await res.json()) as { status: string }
  expect(res.status, `${sent.topic}/${sent.event_id}`).toBe(sent.expected === "processed" ? 201 : 200)
  expect(body.status).toBe(sent.expected)
}

const publishBatch = async (url: string, items: ReadonlyArray<unknown>, expected: ReadonlyArray<Outcome>) => {
  const res = await postJson(`${url}/publish/batch`, { events: items })
  expect(res.status).toBe(200)
  const body = (await res.json()) as { results: ReadonlyArray<{ status: Outcome }> }
  expect(body.results.map((r) => r.status)).toEqual(expected)
}

// ---- reading the page ----

const figure = (page: Page, testId: string) => page.getByTestId(testId).textContent().then((t) => (t ?? "").trim())
const integer = (text: string) => (/^[\d,]+$/.test(text) ? Number(text.replaceAll(",", "")) : Number.NaN)
const newestEvents = async (page: Page) => {
  const rows = page.getByTestId("newest").getByTestId("event")
  const [topicTexts, ids] = await Promise.all([
    rows.locator('[data-field="topic"]').allTextContents(),
    rows.locator('[data-field="event_id"]').allTextContents()
  ])
  return ids.map((event_id, i) => `${topicTexts[i]}/${event_id}`)
}

const scenario = async (browser: Browser, url: string, databaseUrl: string) => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
  const consoleErrors: Array<string> = []
  const pageErrors: Array<string> = []
  const dialogs: Array<string> = []
  const foreignRequests: Array<string> = []
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text())
  })
  page.on("pageerror", (e) => pageErrors.push(String(e)))
  page.on("dialog", (d) => {
    dialogs.push(d.message())
    void d.dismiss()
  })
  page.on("request", (r) => {
    if (!r.url().startsWith(`${url}/`) && !r.url().startsWith("data:")) foreignRequests.push(r.url())
  })
  await page.addInitScript(
    "window.__csp = []; document.addEventListener('securitypolicyviolation', (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI))"
  )

  const response = await page.goto(`${url}/dashboard`)
  expect(response?.status()).toBe(200)
  expect(response?.headers()["content-security-policy"]).toContain("default-src 'none'")
  await expect.poll(() => page.title()).toContain("log-aggregator")

  // The tail says connected once its stream is open; the server counts the subscription.
  await expect.poll(() => figure(page, "tail-state"), waitLong).toBe("connected")
  await expect
    .poll(() => fetch(`${url}/stats`).then(async (r) => ((await r.json()) as { stream_clients: number }).stream_clients), waitLong)
    .toBe(1)
  await expect.poll(() => figure(page, "stats-state"), waitLong).toBe("live")
  await expect.poll(() => figure(page, "events-per-second"), waitLong).toBe("0")
  expect(await figure(page, "duplicate-rate")).toBe("—")
  expect(await figure(page, "received")).toBe("0")
  expect(await page.getByTestId("newest").getByTestId("event").count()).toBe(0)

  // Every value events/s shows from now on.
  await page.evaluate(`(() => {
    const el = document.querySelector('[data-testid="events-per-second"]')
    window.__rates = [el.textContent]
    new MutationObserver(() => window.__rates.push(el.textContent))
      .observe(el, { childList: true, characterData: true, subtree: true })
  })()`)

  const ledger = new Ledger()
  let n = 0

  // 1. Markup in a topic, id and source is shown as text: no element is made of it, no handler runs.
  const hostile = {
    topic: "<img src=x onerror=alert(1)>",
    event_id: `<b id="injected">bold</b><img src=x onerror=alert(2)>`,
    source: "<script>alert(3)</script>"
  }
  await publishOne(url, ledger.send(hostile.topic, hostile.event_id), n++, { source: hostile.source })
  await expect.poll(() => newestEvents(page), waitLong).toEqual([`${hostile.topic}/${hostile.event_id}`])
  const hostileRow = page.getByTestId("newest").getByTestId("event").first()
  expect(await hostileRow.locator('[data-field="topic"]').textContent()).toBe(hostile.topic)
  expect(await hostileRow.locator('[data-field="event_id"]').textContent()).toBe(hostile.event_id)
  expect(await hostileRow.locator('[data-field="source"]').textContent()).toBe(hostile.source)
  expect(await page.locator("img").count()).toBe(0)
  expect(await page.locator("#injected").count()).toBe(0)
  expect(await page.locator("main script, main b").count()).toBe(0)

  // 2. Waves of batches over about five seconds (the chart's bars): about a quarter repeats and one in 25
  // invalid, enough that a duplicate rate over everything received would show another figure.
  const waves = [40, 70, 110, 160, 130, 190, 150, 100, 120, 60]
  for (const [w, size] of waves.entries()) {
    const items: Array<unknown> = []
    const expected: Array<Outcome> = []
    for (let i = 0; i < size; i++) {
      const earlier = ledger.stored.length > 0 && i % 4 === 3
      if (i % 25 === 5) {
        ledger.invalid()
        items.push(invalidEvents[(w + i) % invalidEvents.length])
        expected.push("rejected")
        continue
      }
      const key = earlier
        ? ledger.stored[(i * 31 + w * 7) % ledger.stored.length]!
        : { topic: topics[(w + i) % topics.length]!, event_id: `w${w}-${String(i).padStart(3, "0")}` }
      const sent = ledger.send(key.topic, key.event_id)
      items.push(event(key.topic, key.event_id, n++))
      expected.push(sent.expected)
    }
    await publishBatch(url, items, expected)
    await delay(500)
  }

  // 3. Thirty single events: 24 new keys, every fifth one a repeat of an earlier one.
  const singles: Array<Sent> = []
  for (let i = 1; i <= 30; i++) {
    const news = singles.filter((s) => s.expected === "processed")
    singles.push(
      i % 5 === 0
        ? ledger.send("orders", news[(i * 3) % news.length]!.event_id)
        : ledger.send("orders", `order-${String(news.length + 1).padStart(4, "0")}`)
    )
  }
  expect(singles.filter((s) => s.expected === "processed").length).toBe(24)
  for (const sent of singles) {
    await publishOne(url, sent, n++)
    await delay(40)
  }

  // 4. One last batch: a new event, a repeat and an invalid one.
  const last = ledger.send("payments", "payment-final")
  const repeat = ledger.send("orders", "order-0001")
  ledger.invalid()
  await publishBatch(url, [event(last.topic, last.event_id, n++), event(repeat.topic, repeat.event_id, n++), {
    topic: "payments",
    timestamp: "2025-01-31T12:00:00Z"
  }], ["processed", "dropped_duplicate", "rejected"])

  // The figures become exactly what was sent.
  const stored = ledger.stored.length
  expect(ledger.received).toBe(1 + waves.reduce((a, b) => a + b, 0) + 30 + 3)
  const rows = (await query<{ n: number }>(databaseUrl, "SELECT count(*)::int AS n FROM events"))[0]!.n
  expect(rows).toBe(stored)
  await expect.poll(() => figure(page, "received").then(integer), waitLong).toBe(ledger.received)
  await expect.poll(() => figure(page, "stored").then(integer), waitLong).toBe(stored)
  await expect.poll(() => figure(page, "duplicates").then(integer), waitLong).toBe(ledger.duplicates)
  await expect.poll(() => figure(page, "rejected").then(integer), waitLong).toBe(ledger.rejected)
  await expect.poll(() => figure(page, "db-rows").then(integer), waitLong).toBe(rows)
  const duplicateRate = `${((ledger.duplicates / (stored + ledger.duplicates)) * 100).toFixed(1)}%`
  expect(duplicateRate, "the traffic tells the rate apart from duplicates / received")
    .not.toBe(`${((ledger.duplicates / ledger.received) * 100).toFixed(1)}%`)
  await expect.poll(() => figure(page, "duplicate-rate"), waitLong).toBe(duplicateRate)
  expect(await figure(page, "replicas")).toBe("1")
  expect(await figure(page, "storage-failures")).toBe("0")
  expect(await figure(page, "announcements-failed")).toBe("0")

  // The newest twenty stored events, newest first.
  const newestFirst = ledger.stored.slice(-20).reverse().map((e) => `${e.topic}/${e.event_id}`)
  await expect.poll(() => newestEvents(page), waitLong).toEqual(newestFirst)
  expect(await page.getByTestId("newest").getByTestId("event").count()).toBe(20)
  await expect.poll(() => page.locator("#chart rect").count(), waitLong).toBeGreaterThan(0)

  // The topics, biggest first, with what each holds (GET /topics, refreshed every 5 s).
  const perTopic = new Map<string, number>()
  for (const e of ledger.stored) perTopic.set(e.topic, (perTopic.get(e.topic) ?? 0) + 1)
  const topicRows = async () => {
    const rows = page.getByTestId("topics").getByTestId("topic")
    const [names, counts] = await Promise.all([
      rows.locator('[data-field="topic"]').allTextContents(),
      rows.locator('[data-field="events"]').allTextContents()
    ])
    return names.map((name, i) => `${name}:${integer(counts[i])}`).sort()
  }
  await expect.poll(topicRows, waitLong).toEqual([...perTopic].map(([topic, n]) => `${topic}:${n}`).sort())
  const shownCounts = await page.getByTestId("topics").locator('[data-field="events"]').allTextContents()
  expect(shownCounts.map(integer)).toEqual([...shownCounts.map(integer)].sort((a, b) => b - a))

  mkdirSync(screenshotDir, { recursive: true })
  await page.screenshot({ path: `${screenshotDir}dashboard.png`, animations: "disabled" })

  // events/s went above zero while events came in, and is back to 0 once nothing moves.
  const rates = (await page.evaluate("window.__rates")) as Array<string>
  expect(rates.some((r) => Number(r.replaceAll(",", "")) > 0), `events/s showed ${rates.join(" ")}`).toBe(true)
  await expect.poll(() => figure(page, "events-per-second"), waitLong).toBe("0")

  expect(consoleErrors).toEqual([])
  expect(pageErrors).toEqual([])
  expect(dialogs).toEqual([])
  expect(foreignRequests).toEqual([])
  expect(await page.evaluate("window.__csp")).toEqual([])

  // When /stats fails the page says so, and recovers when it answers again.
  await page.route("**/stats", (route) => route.fulfill({ status: 503, contentType: "application/json", body: "{}" }))
  await expect.poll(() => figure(page, "stats-state"), waitLong).toBe("stats unavailable")
  await page.unroute("**/stats")
  await expect.poll(() => figure(page, "stats-state"), waitLong).toBe("live")
  expect(await figure(page, "received").then(integer)).toBe(ledger.received)
  expect(pageErrors).toEqual([])
}

/** A reverse proxy that serves `target` under `/prefix` (and nothing else), as a shared ingress would. */
const prefixProxy = (target: string, prefix: string) =>
  new Promise<{ url: string; close: () => Promise<void> }>((resolve) => {
    const upstream = new URL(target)
    const server = http.createServer((req, res) => {
      if (!req.url?.startsWith(`${prefix}/`)) {
        res.writeHead(404).end()
        return
      }
      const forward = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url.slice(prefix.length), headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers)
          answer.pipe(res)
        }
      )
      forward.on("error", () => res.destroy())
      req.pipe(forward)
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      resolve({
        url: `http://127.0.0.1:${port}${prefix}`,
        close: () =>
          new Promise((done) => {
            server.closeAllConnections()
            server.close(() => done())
          })
      })
    })
  })

/** Behind a proxy that adds a path prefix the page finds /stats and the live tail under the same prefix. */
const behindPrefix = async (browser: Browser, url: string) => {
  const proxy = await prefixProxy(url, "/ops/aggregator")
  const page = await browser.newPage()
  try {
    const requests: Array<string> = []
    page.on("request", (r) => requests.push(new URL(r.url()).pathname))
    expect((await page.goto(`${proxy.url}/dashboard/`))?.status()).toBe(200)
    await expect.poll(() => figure(page, "tail-state"), waitLong).toBe("connected")
    await expect.poll(() => figure(page, "stats-state"), waitLong).toBe("live")
    const topic = `prefix-${Date.now()}`
    expect((await postJson(`${url}/publish`, event(topic, "through-the-proxy", 1))).status).toBe(201)
    await expect.poll(() => newestEvents(page), waitLong).toContain(`${topic}/through-the-proxy`)
    expect(requests).toContain("/ops/aggregator/stats")
    expect(requests).toContain("/ops/aggregator/events/stream")
  } finally {
    await page.close()
    await proxy.close()
  }
}

describe.skipIf(skipWithoutPostgres || skipWithoutChromium)(
  `the dashboard in Chromium${withoutPostgresNote}${withoutChromiumNote}`,
  () => {
    layer(aggregatorLayer(), { excludeTestServices: true, timeout: "60 seconds" })("GET /dashboard", (it) => {
      it.scoped("shows the cluster figures, events/s, the chart and the newest events as text", () =>
        Effect.gen(function*() {
          expect(haveChromium, `no Chromium at ${chromiumPath} (CI never skips)`).toBe(true)
          const { databaseUrl, url } = yield* TestAggregator
          yield* Effect.promise(() => waitFor(`${url}/ready`))
          const browser = yield* Effect.acquireRelease(
            Effect.promise(() => chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })),
            (browser) => Effect.promise(() => browser.close())
          )
          yield* Effect.promise(() => scenario(browser, url, databaseUrl))
          yield* Effect.promise(() => behindPrefix(browser, url))
        }), 180_000)
    })
  }
)

/** Two replicas sharing PostgreSQL and Redis: the page on one shows the cluster's sums and the other's events. */
const twoReplicas = async (browser: Browser, a: string, b: string) => {
  const page = await browser.newPage()
  try {
    await page.goto(`${a}/dashboard`)
    await expect.poll(() => figure(page, "tail-state"), waitLong).toBe("connected")
    await expect.poll(() => figure(page, "replicas"), waitLong).toBe("2")
    // B's events reach A's live tail through Redis once A's subscription is live: probe until one shows
    let n = 0
    await expect.poll(async () => {
      expect((await postJson(`${b}/publish`, event("probe", `probe-${n++}`, n))).status).toBe(201)
      return (await newestEvents(page)).some((e) => e.startsWith("probe/"))
    }, waitLong).toBe(true)
    const before = { a: (await (await fetch(`${a}/stats`)).json()) as any, b: (await (await fetch(`${b}/stats`)).json()) as any }
    const received = before.a.uptime_stats.received + before.b.uptime_stats.received
    // 10 new events through A, 15 through B of which 5 re-send A's
    for (let i = 0; i < 10; i++) expect((await postJson(`${a}/publish`, event("replicas", `via-a-${i}`, i))).status).toBe(201)
    for (let i = 0; i < 15; i++) {
      const id = i < 5 ? `via-a-${i}` : `via-b-${i}`
      expect((await postJson(`${b}/publish`, event("replicas", id, i))).status).toBe(i < 5 ? 200 : 201)
    }
    await expect.poll(() => figure(page, "received").then(integer), waitLong).toBe(received + 25)
    const own = (await (await fetch(`${a}/stats`)).json()) as any
    // the page shows more than the replica it is served by
    expect(own.uptime_stats.received).toBeLessThan(received + 25)
    await expect.poll(() => newestEvents(page), waitLong).toContain("replicas/via-b-14")
    expect(await newestEvents(page)).toContain("replicas/via-a-9")
  } finally {
    await page.close()
  }
}

describe.skipIf(skipWithoutPostgres || skipWithoutRedis || skipWithoutChromium)(
  `the dashboard of one replica of two${withoutPostgresNote}${withoutRedisNote}${withoutChromiumNote}`,
  () => {
    let db: Awaited<ReturnType<typeof freshDatabase>>
    let replicas: Array<Spawned> = []
    beforeAll(async () => {
      db = await freshDatabase("dash2")
      const env = {
        DATABASE_URL: db.url,
        REDIS_URL: redisUrl,
        REDIS_PREFIX: `${unique("la-dash")}:`,
        CLUSTER_STATS_INTERVAL_MS: "200"
      }
      replicas = [spawnAggregator(env), spawnAggregator(env)]
      await Promise.all(replicas.map(async (r) => waitFor(`${await r.listening}/ready`)))
    })
    afterAll(async () => {
      for (const r of replicas) r.child.kill("SIGTERM")
      await Promise.all(replicas.map((r) => r.exited))
      await db?.drop()
    })

    it.live("sums the replicas' counters and shows the other replica's events from the live tail", () =>
      Effect.gen(function*() {
        expect(haveChromium, `no Chromium at ${chromiumPath} (CI never skips)`).toBe(true)
        const browser = yield* Effect.acquireRelease(
          Effect.promise(() => chromium.launch({ executablePath: chromiumPath, args: chromiumArgs })),
          (browser) => Effect.promise(() => browser.close())
        )
        yield* Effect.promise(() => twoReplicas(browser, replicas[0].url, replicas[1].url))
      }).pipe(Effect.scoped), 120_000)
  }
)
