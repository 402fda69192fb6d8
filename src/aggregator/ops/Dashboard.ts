import { readFileSync } from "node:fs"

/**
 * The page behind `GET /dashboard` (dashboard.html beside this file; the build copies it into dist): one
 * self-contained HTML document (inline CSS and script, no external requests) that polls `/stats` every
 * second and `/topics` every 5 s, and follows the live tail `/events/stream`, all same origin. Totals and rates are the cluster
 * figures (every replica behind a load balancer). Event data is only ever written with `textContent`:
 * topics and ids are the publishers' text.
 */
export const dashboardPage = readFileSync(new URL("./dashboard.html", import.meta.url), "utf8")
