// A stand-in aggregator for the publisher's batch mode: answers GET /ready, and every POST /publish/batch at
// once with a BatchResult naming each item as processed (or dropped_duplicate when its key came before), so
// the publisher's own cost can be measured without a database. `node bench/batch-standin.mjs [port]`; prints
// its URL. Use it with STANDIN=<url> node bench/publisher-batch.mjs … (which passes --no-verify).
import { createServer } from "node:http"

const seen = new Set()
const server = createServer((req, res) => {
  const chunks = []
  req.on("data", (d) => chunks.push(d))
  req.on("end", () => {
    if (req.method === "GET" && req.url === "/ready") {
      res.writeHead(200, { "content-type": "application/json" })
      return res.end(`{"status":"ready","database":"stand-in"}`)
    }
    if (req.method !== "POST" || req.url !== "/publish/batch") {
      res.writeHead(404)
      return res.end()
    }
    const { events } = JSON.parse(Buffer.concat(chunks).toString())
    let processed = 0
    const results = events.map((e, index) => {
      const key = `${e.topic}\u0000${e.event_id}`
      const fresh = !seen.has(key)
      if (fresh) {
        seen.add(key)
        processed++
      }
      return `{"index":${index},"topic":${JSON.stringify(e.topic)},"event_id":${JSON.stringify(e.event_id)},"status":"${fresh ? "processed" : "dropped_duplicate"}"}`
    })
    const body = `{"received":${events.length},"processed":${processed},"duplicates":${events.length - processed},"rejected":0,"results":[${results.join(",")}]}`
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(body) })
    res.end(body)
  })
})
server.keepAliveTimeout = 60_000
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => console.log(`http://127.0.0.1:${server.address().port}`))
