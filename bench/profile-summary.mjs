#!/usr/bin/env node
// Top self time of a V8 .cpuprofile (from `node --cpu-prof`), by function, by file and by package.
//   node bench/profile-summary.mjs <file.cpuprofile> [--top 20] [--window <fromUs> <toUs>]
//   node bench/profile-summary.mjs <file.cpuprofile> --callers <functionName> [--depth 6]   (who calls it)
// --window keeps only samples taken between two CLOCK_MONOTONIC microsecond readings (what
// process.hrtime.bigint() / 1000n gives in any process on the machine), e.g. one load phase.
import { existsSync, readFileSync } from "node:fs"
import { SourceMap } from "node:module"
import { dirname, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"

const PSEUDO = new Set(["(garbage collector)", "(program)", "(idle)", "(root)"])

const fileOf = (url, fn) => {
  if (!url) return PSEUDO.has(fn) ? fn : "(native)"
  if (url.startsWith("node:")) return url
  const path = url.replace(/^file:\/\//, "")
  const nm = path.lastIndexOf("/node_modules/")
  if (nm >= 0) return path.slice(nm + "/node_modules/".length)
  const cwd = process.cwd() + "/"
  return path.startsWith(cwd) ? path.slice(cwd.length) : path
}

const packageOf = (url, fn) => {
  if (!url) return PSEUDO.has(fn) ? fn : "(native)"
  if (url.startsWith("node:")) return "node: (core)"
  const path = url.replace(/^file:\/\//, "")
  const nm = path.lastIndexOf("/node_modules/")
  if (nm >= 0) {
    const parts = path.slice(nm + "/node_modules/".length).split("/")
    return parts[0].startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]
  }
  const cwd = process.cwd() + "/"
  const rel = path.startsWith(cwd) ? path.slice(cwd.length) : path
  const m = /^((?:dist|src)\/[^/]+)\//.exec(rel)
  return m ? `(project) ${m[1]}` : `(project) ${rel}`
}

// A bundle (dist/aggregator/index.js and its chunks) is one file for many modules: a frame in it is charged to
// the module its source map names, so files and packages read as they do for unbundled code.
const sourceMaps = new Map()
const sourceMapOf = (url) => {
  if (!sourceMaps.has(url)) {
    let map
    try {
      const path = fileURLToPath(url)
      const m = /\/\/# sourceMappingURL=(\S+)\s*$/.exec(readFileSync(path, "utf8").slice(-500))
      const file = m && resolve(dirname(path), m[1])
      if (file && existsSync(file)) map = { map: new SourceMap(JSON.parse(readFileSync(file, "utf8"))), dir: dirname(file) }
    } catch {
      // not a file, or no usable map: the frame stays as it is
    }
    sourceMaps.set(url, map)
  }
  return sourceMaps.get(url)
}

/** The frame's callFrame, through its file's source map when it has one. */
const original = (callFrame) => {
  const { url, lineNumber, columnNumber } = callFrame
  if (!url?.startsWith("file://") || url.includes("/node_modules/")) return callFrame
  const sm = sourceMapOf(url)
  const entry = sm?.map.findEntry(lineNumber, columnNumber)
  if (!entry?.originalSource) return callFrame
  const source = entry.originalSource.startsWith("file://") ? entry.originalSource : pathToFileURL(resolve(sm.dir, entry.originalSource)).href
  return { ...callFrame, url: source, lineNumber: entry.originalLine }
}

/**
 * Self time in microseconds by node id: each sample is charged the interval until the next one. Only
 * samples inside `window` (CLOCK_MONOTONIC µs, the profile's own clock) count, when one is given.
 */
const selfTimes = (profile, window) => {
  const self = new Map()
  const { samples = [], timeDeltas = [] } = profile
  let t = profile.startTime
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i] ?? 0
    if (window && (t < window.from || t > window.to)) continue
    const dt = i + 1 < timeDeltas.length ? timeDeltas[i + 1] : 0
    self.set(samples[i], (self.get(samples[i]) ?? 0) + Math.max(0, dt))
  }
  return self
}

export const summarize = (profile, top = 20, window = undefined) => {
  const self = selfTimes(profile, window)
  const byFunction = new Map()
  const byFile = new Map()
  const byPackage = new Map()
  let total = 0
  let idle = 0
  const add = (map, key, us) => map.set(key, (map.get(key) ?? 0) + us)
  for (const node of profile.nodes) {
    const us = self.get(node.id) ?? 0
    if (us === 0) continue
    const { functionName, url, lineNumber } = original(node.callFrame)
    const fn = functionName || "(anonymous)"
    total += us
    if (fn === "(idle)") idle += us
    const file = fileOf(url, fn)
    add(byFunction, url ? `${fn}  ${file}:${lineNumber + 1}` : fn, us)
    add(byFile, file, us)
    add(byPackage, packageOf(url, fn), us)
  }
  const busy = total - idle
  const render = (title, map) => {
    const rows = [...map.entries()].filter(([k]) => k !== "(idle)").sort((a, b) => b[1] - a[1]).slice(0, top)
    const lines = rows.map(([k, us]) =>
      `${(us / 1000).toFixed(0).padStart(8)} ms ${(busy > 0 ? (100 * us) / busy : 0).toFixed(1).padStart(5)}%  ${k}`
    )
    return `Top ${top} self time by ${title} (% of non-idle):\n${lines.join("\n")}`
  }
  const head = `profile: ${(total / 1e6).toFixed(1)} s sampled, ${(busy / 1e6).toFixed(1)} s busy (${
    total > 0 ? ((100 * busy) / total).toFixed(0) : 0
  }%), ${(idle / 1e6).toFixed(1)} s idle`
  return [head, render("function", byFunction), render("file", byFile), render("package", byPackage)].join("\n\n")
}

export const summarizeFile = (file, top = 20, window = undefined) =>
  summarize(JSON.parse(readFileSync(file, "utf8")), top, window)

const frameText = (node) => {
  const { functionName, url, lineNumber } = original(node.callFrame)
  return url ? `${functionName || "(anonymous)"}  ${fileOf(url, functionName)}:${lineNumber + 1}` : functionName || "(anonymous)"
}

/** Who calls `functionName`: its total time (self and callees), grouped by its chain of `depth` callers. */
export const callers = (profile, functionName, { depth = 6, window = undefined, top = 10 } = {}) => {
  const self = selfTimes(profile, window)
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const total = (id) => (self.get(id) ?? 0) + (byId.get(id).children ?? []).reduce((a, c) => a + total(c), 0)
  const chains = new Map()
  for (const n of profile.nodes) {
    if (n.callFrame.functionName !== functionName) continue
    const chain = []
    for (let cur = parent.get(n.id), i = 0; cur !== undefined && i < depth; cur = parent.get(cur), i++) {
      chain.push(frameText(byId.get(cur)))
    }
    const key = chain.join("\n             <- ")
    chains.set(key, (chains.get(key) ?? 0) + total(n.id))
  }
  const rows = [...chains].filter(([, us]) => us > 0).sort((a, b) => b[1] - a[1]).slice(0, top)
  return `Callers of ${functionName} (time including its callees):\n` +
    rows.map(([k, us]) => `${(us / 1000).toFixed(0).padStart(8)} ms  <- ${k}`).join("\n")
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const args = process.argv.slice(2)
  const option = (name, arity = 1) => {
    const at = args.indexOf(name)
    return at < 0 ? undefined : args.splice(at, arity + 1).slice(1)
  }
  const top = Number(option("--top")?.[0] ?? 20)
  const windowArgs = option("--window", 2)
  const window = windowArgs ? { from: Number(windowArgs[0]), to: Number(windowArgs[1]) } : undefined
  const callersOf = option("--callers")?.[0]
  const depth = Number(option("--depth")?.[0] ?? 6)
  if (args.length === 0) {
    console.error(
      "usage: node bench/profile-summary.mjs <file.cpuprofile> [--top 20] [--window <fromUs> <toUs>] [--callers <function> [--depth 6]]"
    )
    process.exit(2)
  }
  for (const file of args) {
    const text = callersOf === undefined
      ? summarizeFile(file, top, window)
      : callers(JSON.parse(readFileSync(file, "utf8")), callersOf, { depth, window, top })
    console.log(`${file}\n${text}\n`)
  }
}
