import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { makeTemplate } from "../aggregator/storage/PgliteClient.js"

// Part of `npm run build`: runs the embedded PostgreSQL's initdb once, into dist/pgdata-template, so that the
// aggregator's first start on a new DATA_DIR copies it instead of running initdb itself (seconds faster and
// hundreds of MiB lighter). Made again only when the installed PGlite version changes.

const dist = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "..")
const dir = Path.join(dist, "pgdata-template")
const stamp = `${dir}.version`
const pgliteEntry = createRequire(import.meta.url).resolve("@electric-sql/pglite")
const version: string = JSON.parse(Fs.readFileSync(Path.join(pgliteEntry, "..", "..", "package.json"), "utf8")).version

const current = Fs.existsSync(stamp) && Fs.readFileSync(stamp, "utf8").trim() === version &&
  Fs.existsSync(Path.join(dir, "PG_VERSION"))
if (!current) {
  const started = performance.now()
  Fs.rmSync(stamp, { force: true })
  await makeTemplate(dir)
  Fs.writeFileSync(stamp, `${version}\n`)
  console.log(`pglite-template: initdb for PGlite ${version} in ${Math.round(performance.now() - started)} ms into ${dir}`)
}
