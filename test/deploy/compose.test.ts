import { Command } from "@effect/cli"
import { NodeContext } from "@effect/platform-node"
import { ConfigProvider, Effect, LogLevel, Option, Redacted } from "effect"
import { spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { parse, parseDocument } from "yaml"
import { AggregatorConfig, logLevel } from "../../src/aggregator/Config.js"
import { makeCommand, type Settings } from "../../src/publisher/Cli.js"
import { freePort, spawnAggregator, waitFor } from "../support/aggregator.js"
import { skipWithoutPostgres, withoutPostgresNote } from "../support/backends.js"
import { freshDatabase } from "../support/database.js"

// The Docker Compose deployment, checked statically: there is no Docker engine on the build machines.
// Entry files are looked up in dist/, so run `npm run build` first (`npm test` does).

const root = fileURLToPath(new URL("../..", import.meta.url))
const read = (file: string) => fs.readFileSync(path.join(root, file), "utf8")
const composeText = read("docker-compose.yml")
const compose: any = parse(composeText)
const services: Record<string, any> = compose.services ?? {}
const service = (name: string) => {
  const s = services[name]
  if (s === undefined) throw new Error(`docker-compose.yml has no service "${name}"`)
  return s
}

// ---------------------------------------------------------------------------------------------
// Dockerfile and .dockerignore

interface Instruction {
  readonly keyword: string
  readonly args: string
}
interface Stage {
  readonly from: string
  readonly name: string | undefined
  readonly instructions: Array<Instruction>
}

const parseDockerfile = (text: string): Array<Stage> => {
  const lines: Array<string> = []
  let pending = ""
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim()
    if (line.startsWith("#") || (line === "" && pending === "")) continue
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `
      continue
    }
    lines.push(pending + line)
    pending = ""
  }
  const stages: Array<Stage> = []
  for (const line of lines) {
    const [, keyword = "", args = ""] = /^(\S+)\s*(.*)$/.exec(line) ?? []
    if (keyword.toUpperCase() === "FROM") {
      const [, from = "", name] = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args) ?? []
      stages.push({ from, name: name?.toLowerCase(), instructions: [] })
    } else if (stages.length > 0) {
      stages.at(-1)!.instructions.push({ keyword: keyword.toUpperCase(), args })
    }
  }
  return stages
}

const stages = parseDockerfile(read("Dockerfile"))
const stageNamed = (name: string) => {
  const stage = stages.find((s) => s.name === name.toLowerCase())
  if (stage === undefined) throw new Error(`the Dockerfile has no stage "${name}"`)
  return stage
}
const parentOf = (stage: Stage) => stages.find((s) => s.name === stage.from.toLowerCase())

/** The stage's own last `keyword`, or the one it inherits from the stage it is built on. */
const effective = (stage: Stage, keyword: string): string | undefined => {
  const own = stage.instructions.filter((i) => i.keyword === keyword).at(-1)
  if (own !== undefined) return own.args
  const parent = parentOf(stage)
  return parent === undefined ? undefined : effective(parent, keyword)
}
const runsOf = (stage: Stage): Array<string> => {
  const parent = parentOf(stage)
  return [
    ...(parent === undefined ? [] : runsOf(parent)),
    ...stage.instructions.filter((i) => i.keyword === "RUN").map((i) => i.args)
  ]
}

interface Copy {
  readonly from: string | undefined
  readonly sources: Array<string>
  readonly dest: string
}
const copiesOf = (stage: Stage): Array<Copy> =>
  stage.instructions.filter((i) => i.keyword === "COPY" || i.keyword === "ADD").map((i) => {
    const tokens = i.args.split(/\s+/)
    const flags = tokens.filter((t) => t.startsWith("--"))
    const rest = tokens.filter((t) => !t.startsWith("--"))
    const parts: Array<string> = rest[0]?.startsWith("[") ? JSON.parse(rest.join(" ")) : rest
    return {
      from: flags.find((f) => f.startsWith("--from="))?.slice("--from=".length),
      sources: parts.slice(0, -1),
      dest: parts.at(-1) ?? ""
    }
  })

const globToRegExp = (pattern: string) => {
  let body = ""
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (pattern.startsWith("**/", i)) {
      body += "(?:.*/)?"
      i += 2
    } else if (pattern.startsWith("**", i)) {
      body += ".*"
      i += 1
    } else if (c === "*") body += "[^/]*"
    else if (c === "?") body += "[^/]"
    else body += c.replace(/[.+^${}()|[\]\\]/g, "\\$&")
  }
  // a pattern that names a directory excludes everything below it
  return new RegExp(`^${body}(?:/.*)?$`)
}

/** Whether the build context leaves `file` out, by the last matching .dockerignore rule. */
const dockerIgnores = (() => {
  const rules = read(".dockerignore").split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const negate = l.startsWith("!")
      const pattern = path.posix.normalize((negate ? l.slice(1) : l).replace(/^\/+/, "")).replace(/\/$/, "")
      return { negate, re: globToRegExp(pattern) }
    })
  return (file: string) => {
    const p = path.posix.normalize(file).replace(/^\.\//, "").replace(/\/$/, "")
    return rules.reduce((ignored, rule) => (rule.re.test(p) ? !rule.negate : ignored), false)
  }
})()

// ---------------------------------------------------------------------------------------------
// Programs and the settings they read

const requireFromRoot = createRequire(path.join(root, "package.json"))

/** The file `node <script>` runs (node resolves a directory to its index.js), which must be in dist/. */
const entryFile = (argv: ReadonlyArray<string>): string => {
  expect(argv[0], `command ${JSON.stringify(argv)} should run node`).toBe("node")
  const script = argv[1] ?? ""
  let resolved: string
  try {
    resolved = requireFromRoot.resolve(path.join(root, script))
  } catch {
    throw new Error(`"node ${script}" has no entry file: run \`npm run build\`, or does src/ build to ${script}?`)
  }
  expect(path.relative(path.join(root, "dist"), resolved).startsWith(".."), `${resolved} is outside dist/`).toBe(false)
  return resolved
}

const programOf = (argv: ReadonlyArray<string>) => {
  const m = /^(?:\.\/)?dist\/([\w-]+)/.exec(argv[1] ?? "")
  if (m === null) throw new Error(`command ${JSON.stringify(argv)} does not run a program from dist/`)
  return m[1]!
}

const sourceFiles = (dir: string): Array<string> => {
  const abs = path.join(root, dir)
  if (!fs.existsSync(abs)) return []
  return (fs.readdirSync(abs, { recursive: true }) as Array<string>)
    .filter((f) => f.endsWith(".ts"))
    .map((f) => path.join(dir, f))
}

/**
 * Names of environment settings a source text may read: every string literal that is a whole
 * upper-case name (`Config.integer("PORT")`, or an argument of a helper that wraps one, such as
 * `positiveInt("DB_POOL_SIZE", 10)` or `integer("events", "EVENTS", …)`), and `process.env.NAME` in
 * test files. A superset, but a setting renamed in the source is no longer in it.
 */
const settingsIn = (text: string): Set<string> => {
  const names = new Set<string>()
  for (const m of text.matchAll(/(["'`])([A-Z][A-Z0-9_]*)\1/g)) names.add(m[2]!)
  for (const m of text.matchAll(/process\.env(?:\.([A-Z][A-Z0-9_]*)|\[\s*(["'`])([A-Z][A-Z0-9_]*)\2\s*\])/g)) {
    names.add(m[1] ?? m[3]!)
  }
  return names
}

/** The sources of one program; the tester's image also runs the suite in test/e2e. */
const programSources = (program: string) => [
  ...sourceFiles(path.join("src", program)),
  ...(program === "tester" ? sourceFiles(path.join("test", "e2e")) : [])
]

const settingsOf = (program: string) => {
  const names = new Set<string>()
  for (const file of programSources(program)) for (const n of settingsIn(read(file))) names.add(n)
  return names
}

// read by Node itself rather than by our programs
const nodeSettings = new Set(["NODE_ENV", "NODE_OPTIONS", "TZ"])

const environmentOf = (s: any): Record<string, string> => {
  const env = s.environment ?? {}
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((e: string) => {
      const i = e.indexOf("=")
      return i < 0 ? [e, ""] : [e.slice(0, i), e.slice(i + 1)]
    }))
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, v === null ? "" : String(v)]))
}

const commandOf = (s: any): Array<string> => {
  if (Array.isArray(s.command)) return s.command.map(String)
  if (typeof s.command === "string") return s.command.split(/\s+/)
  return JSON.parse(effective(stageNamed(s.build.target), "CMD") ?? "[]")
}

const builtServices = Object.entries(services).filter(([, s]) => s.build !== undefined)

const healthcheckOf = (name: string): Array<string> => {
  const hc = service(name).healthcheck
  expect(hc, `${name} needs a healthcheck`).toBeDefined()
  expect(hc.disable ?? false, `${name}'s healthcheck is disabled`).toBe(false)
  const test: Array<string> = typeof hc.test === "string" ? ["CMD-SHELL", hc.test] : hc.test
  expect(["CMD", "CMD-SHELL"]).toContain(test[0])
  expect(test.length).toBeGreaterThan(1)
  return test
}

const onPath = (command: string) =>
  (process.env.PATH ?? "").split(path.delimiter).filter((d) => d !== "").map((d) => path.join(d, command)).find((p) => {
    try {
      fs.accessSync(p, fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })

// ---------------------------------------------------------------------------------------------

describe("docker-compose.yml", () => {
  it("is valid YAML that reads the same as YAML 1.1 (docker-compose 1.x) and 1.2 (Compose v2)", () => {
    expect(parseDocument(composeText, { uniqueKeys: true }).errors).toEqual([])
    expect(parse(composeText, { version: "1.1" })).toEqual(compose)
  })

  it("uses only top-level keys both docker-compose 1.29 and Compose v2 accept", () => {
    for (const key of Object.keys(compose)) {
      expect(["services", "volumes", "networks", "configs", "secrets"].includes(key) || key.startsWith("x-"), key)
        .toBe(true)
    }
    expect(Object.keys(services).sort()).toEqual(["aggregator", "broker", "publisher", "storage", "tester"])
  })

  it("runs each built service's program from a file `npm run build` produces", () => {
    expect(builtServices.map(([name]) => name).sort()).toEqual(["aggregator", "publisher", "tester"])
    for (const [name, s] of builtServices) {
      const argv = commandOf(s)
      expect(programOf(argv), name).toBe(name)
      expect(entryFile(argv)).toBe(path.join(root, "dist", name, "index.js"))
      stageNamed(s.build.target ?? stages.at(-1)!.name)
      expect(s.build.context ?? s.build).toBe(".")
    }
  })

  it("keeps PostgreSQL's data in a named volume declared at the top level", () => {
    const storage = service("storage")
    expect(storage.image).toMatch(/^postgres:16(\b|$)/)
    const mounts = (storage.volumes ?? []).map((v: any) => {
      if (typeof v !== "string") return { type: v.type, source: v.source, target: v.target }
      const [source = "", target = ""] = v.split(":")
      return { type: /^[./~]/.test(source) ? "bind" : "volume", source, target }
    })
    const data = mounts.find((m: any) => m.target === "/var/lib/postgresql/data")
    expect(data, "storage mounts /var/lib/postgresql/data").toBeDefined()
    expect(data.type).toBe("volume")
    expect(Object.keys(compose.volumes ?? {})).toContain(data.source)
  })

  it("gives every long-running service a healthcheck that fits it", () => {
    const storageEnv = environmentOf(service("storage"))
    const pg = healthcheckOf("storage").slice(1).join(" ")
    expect(pg).toMatch(/\bpg_isready\b/)
    expect(pg).toContain(`-U ${storageEnv.POSTGRES_USER}`)
    expect(pg).toContain(`-d ${storageEnv.POSTGRES_DB}`)
    expect(healthcheckOf("broker").slice(1)).toEqual(["redis-cli", "ping"])
    const agg = healthcheckOf("aggregator")
    expect(agg.slice(0, 3)).toEqual(["CMD", "node", "-e"])
    expect(agg[3]).toContain("/ready")
    for (const name of ["storage", "broker", "aggregator"]) {
      expect(service(name).restart, name).toMatch(/^(always|unless-stopped|on-failure)/)
    }
  })

  it("starts the aggregator once storage is healthy, wired to it with matching credentials and port", () => {
    const agg = service("aggregator")
    expect(agg.depends_on?.storage?.condition).toBe("service_healthy")
    const env = environmentOf(agg)
    const storageEnv = environmentOf(service("storage"))
    const db = new URL(env.DATABASE_URL ?? "")
    expect(db.protocol).toMatch(/^postgres(ql)?:$/)
    expect(db.hostname).toBe("storage")
    expect(decodeURIComponent(db.username)).toBe(storageEnv.POSTGRES_USER)
    expect(decodeURIComponent(db.password)).toBe(storageEnv.POSTGRES_PASSWORD)
    expect(db.pathname).toBe(`/${storageEnv.POSTGRES_DB}`)
    const port = env.PORT ?? "8080"
    const targets = (agg.ports ?? []).map((p: any) => String(typeof p === "object" ? p.target : p.split(":").at(-1)))
    expect(targets).toContain(port)
    for (const client of ["publisher", "tester"]) {
      expect(environmentOf(service(client)).AGGREGATOR_URL, client).toBe(`http://aggregator:${port}`)
    }
    const expose = effective(stageNamed(agg.build.target), "EXPOSE")?.split(/\s+/) ?? []
    expect(expose).toContain(port)
  })

  it("wires the aggregator to the broker once it is healthy", async () => {
    const agg = service("aggregator")
    expect(agg.depends_on?.broker?.condition).toBe("service_healthy")
    const url = new URL(environmentOf(agg).REDIS_URL ?? "")
    expect(url.protocol).toBe("redis:")
    expect(url.hostname).toBe("broker")
    expect(url.port).toBe("6379")
  })

  it("gives the aggregator values its configuration accepts", async () => {
    const env = environmentOf(service("aggregator"))
    const load = Effect.all([AggregatorConfig, logLevel("LOG_LEVEL")]).pipe(
      Effect.provide(AggregatorConfig.Default),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))
    )
    const [config, level] = await Effect.runPromise(load)
    expect(config.port).toBe(Number(env.PORT))
    expect(config.host).toBe(env.HOST)
    expect(Option.map(config.databaseUrl, Redacted.value)).toEqual(Option.some(env.DATABASE_URL))
    // per-request debug lines would flood the log during the 20,000-event run
    expect(level).toBe(LogLevel.Info)
  })

  it("runs the publisher once, after the aggregator is healthy: 20,000 events, 30% duplicates", async () => {
    const pub = service("publisher")
    expect(pub.depends_on?.aggregator?.condition).toBe("service_healthy")
    expect(pub.restart).toBe("no")
    expect(pub.profiles).toBeUndefined()
    // the publisher's own command line, with no flags and the compose environment
    let settings: Settings | undefined
    const cli = Command.run(makeCommand((s) => Effect.sync(() => (settings = s))), { name: "publisher", version: "0" })
    await Effect.runPromise(cli(["node", "publisher"]).pipe(
      Effect.provide(NodeContext.layer),
      Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(environmentOf(pub)))))
    ))
    expect(settings).toMatchObject({ url: "http://aggregator:8080", events: 20_000, duplicates: 0.3 })
  })

  it("leaves the tester out of `docker compose up` (profile) and runs it against a healthy aggregator", () => {
    const tester = service("tester")
    expect(tester.profiles?.length ?? 0).toBeGreaterThan(0)
    expect(tester.depends_on?.aggregator?.condition).toBe("service_healthy")
    expect(tester.restart).toBe("no")
    for (const [name, s] of Object.entries(services)) {
      if (s.profiles !== undefined) continue
      // a default service that needs a profiled one would drag it in (Compose v2 refuses the file)
      for (const dep of Object.keys(s.depends_on ?? {})) expect(services[dep]?.profiles, `${name} -> ${dep}`).toBeUndefined()
    }
  })

  it("finds the settings a source text reads, so a renamed setting fails the next check", () => {
    const source = `
      port: yield* Config.integer("PORT").pipe(Config.withDefault(8080)),
      size: yield* positiveInt("DB_POOL_SIZE", 10),
      events: integer("events", "EVENTS", 20_000, 1, "Events to send. Env EVENTS_TOTAL."),
      url: Config.redacted('DATABASE_URL'),
      level: Config.logLevel("LOG_LEVEL"),
      e2e: process.env.AGGREGATOR_URL ?? process.env["TEST_TIMEOUT"],
      not: Config.string("lowercase"), message: "MAX_BODY_BYTES must be positive"`
    expect([...settingsIn(source)].sort()).toEqual(
      ["AGGREGATOR_URL", "DATABASE_URL", "DB_POOL_SIZE", "EVENTS", "LOG_LEVEL", "PORT", "TEST_TIMEOUT"]
    )
    expect(settingsIn(source.replace(`"PORT"`, `"HTTP_PORT"`)).has("PORT")).toBe(false)
    const aggregator = settingsOf("aggregator")
    for (const name of ["PORT", "HOST", "DATABASE_URL", "LOG_LEVEL", "MAX_BODY_BYTES"]) expect(aggregator).toContain(name)
  })

  it.each(["aggregator", "publisher", "tester"])("sets only environment variables the %s program reads", (name) => {
    const s = service(name)
    const program = programOf(commandOf(s))
    const known = settingsOf(program)
    expect(known.size, `src/${program} reads no settings`).toBeGreaterThan(0)
    const unknown = Object.keys(environmentOf(s)).filter((n) => !known.has(n) && !nodeSettings.has(n))
    expect(unknown, `${name} sets variables that src/${program} never reads`).toEqual([])
  })
})

describe("docker-compose.scale.yml", () => {
  const scaleText = read("docker-compose.scale.yml")
  const scale: any = parse(scaleText)
  const lb = scale.services?.lb

  it("is valid YAML read the same by docker-compose 1.x and Compose v2, and only adds a load balancer", () => {
    expect(parseDocument(scaleText, { uniqueKeys: true }).errors).toEqual([])
    expect(parse(scaleText, { version: "1.1" })).toEqual(scale)
    for (const name of Object.keys(scale.services)) {
      if (name !== "lb") expect(Object.keys(services), `${name} overrides a service of docker-compose.yml`).toContain(name)
    }
    // a fixed host port would clash between replicas; a range gives each its own
    for (const p of service("aggregator").ports ?? []) expect(String(typeof p === "object" ? p.published : p.split(":")[0])).toMatch(/-/)
  })

  it("runs the official nginx image with deploy/nginx.conf, healthy before the clients use it", () => {
    expect(lb.image).toMatch(/^nginx:[\w.-]+$/)
    const mount = (lb.volumes ?? []).map(String).find((v: string) => v.split(":")[1] === "/etc/nginx/nginx.conf")
    expect(mount, "lb mounts /etc/nginx/nginx.conf").toBeDefined()
    expect(fs.existsSync(path.join(root, mount.split(":")[0]))).toBe(true)
    expect(lb.depends_on?.aggregator?.condition).toBe("service_healthy")
    const test: Array<string> = lb.healthcheck?.test ?? []
    expect(test.join(" ")).toContain("/nginx-health")
    for (const client of ["publisher", "tester"]) {
      expect(scale.services[client].environment.AGGREGATOR_URL, client).toBe("http://lb:8080")
      expect(scale.services[client].depends_on?.lb?.condition).toBe("service_healthy")
    }
  })

  it("proxies to the aggregator's port, streams without buffering, and answers its own health path", () => {
    const conf = read("deploy/nginx.conf")
    const port = environmentOf(service("aggregator")).PORT ?? "8080"
    expect(conf).toMatch(new RegExp(`server\\s+aggregator:${port}\\b`))
    expect(conf).toMatch(/listen\s+8080;/)
    const stream = /location\s*=\s*\/events\/stream\s*\{([^}]*)\}/.exec(conf)?.[1] ?? ""
    expect(stream).toMatch(/proxy_buffering\s+off;/)
    expect(stream).toMatch(/proxy_read_timeout\s+\d+[hm];/)
    expect(conf).toMatch(/location\s*=\s*\/nginx-health\s*\{[^}]*return 200/)
  })
})

describe("Dockerfile", () => {
  it("builds on a pinned LTS Node major", () => {
    const names = new Set(stages.map((s) => s.name))
    const images = stages.filter((s) => !names.has(s.from.toLowerCase())).map((s) => s.from)
    expect(images.length).toBeGreaterThan(0)
    for (const image of images) {
      const major = Number(/^node:(\d+)(?:[.-]|$)/.exec(image)?.[1])
      expect(major, `${image} is not node:<major>…`).toBeGreaterThanOrEqual(20)
      expect(major % 2, `${image}: odd Node majors are never LTS`).toBe(0)
    }
  })

  it("has final stages that run as a non-root user a program from dist/", () => {
    const targets = new Set([stages.at(-1)!.name, ...builtServices.map(([, s]) => s.build.target)])
    expect([...targets].sort()).toEqual(["runtime", "tester"])
    for (const target of targets) {
      const stage = stageNamed(target!)
      const user = effective(stage, "USER")
      expect(user, `stage ${target} sets no USER (root)`).toBeDefined()
      expect(["root", "0"]).not.toContain(user!.split(":")[0])
      const cmd = effective(stage, "CMD")
      expect(cmd?.startsWith("["), `stage ${target}: CMD in exec form`).toBe(true)
      entryFile(JSON.parse(cmd!))
    }
    expect(JSON.parse(effective(stageNamed("runtime"), "CMD")!)).toEqual(["node", "dist/aggregator"])
    expect(JSON.parse(effective(stageNamed("tester"), "CMD")!)).toEqual(["node", "dist/tester"])
  })

  it("ships production dependencies to the runtime and dev dependencies, test/ and vitest.config.ts to the tester", () => {
    const nodeModulesFrom = (target: string) => {
      const copy = copiesOf(stageNamed(target)).find((c) => c.sources.some((s) => s.endsWith("node_modules")))
      expect(copy?.from, `stage ${target} copies node_modules from another stage`).toBeDefined()
      return runsOf(stageNamed(copy!.from!)).filter((r) => /\bnpm ci\b/.test(r))
    }
    const runtimeInstall = nodeModulesFrom("runtime")
    expect(runtimeInstall.length).toBe(1)
    expect(runtimeInstall[0]).toMatch(/--omit[= ]dev\b/)
    const testerInstall = nodeModulesFrom("tester")
    expect(testerInstall.length).toBe(1)
    expect(testerInstall[0]).not.toMatch(/--omit|--production/)
    const testerSources = copiesOf(stageNamed("tester")).filter((c) => c.from === undefined).flatMap((c) => c.sources)
    expect(testerSources).toEqual(expect.arrayContaining(["test", "vitest.config.ts", "package.json"]))
    const runtime = stageNamed("runtime")
    // package.json's "type": "module" makes node load dist/*.js as ES modules
    expect(copiesOf(runtime).filter((c) => c.from === undefined).flatMap((c) => c.sources)).toContain("package.json")
    const user = effective(runtime, "USER")!.split(":")[0]
    expect(runsOf(runtime).some((r) => new RegExp(`chown (-R )?${user}(:\\S+)? .*/app/data\\b`).test(r)), "writable /app/data")
      .toBe(true)
  })

  it("copies only files that exist and that .dockerignore lets into the build context", () => {
    for (const stage of stages) {
      for (const copy of copiesOf(stage)) {
        if (copy.from !== undefined) {
          stageNamed(copy.from)
          continue
        }
        for (const source of copy.sources) {
          expect(fs.existsSync(path.join(root, source)), `COPY ${source}: no such file`).toBe(true)
          expect(dockerIgnores(source), `COPY ${source} is excluded by .dockerignore`).toBe(false)
        }
      }
    }
    for (const local of ["node_modules", "dist", "data", ".git", "coverage", "npm-debug.log", "test/x.log"]) {
      expect(dockerIgnores(local), `.dockerignore should exclude ${local}`).toBe(true)
    }
  })
})

// ---------------------------------------------------------------------------------------------
// The aggregator's healthcheck command, run as Docker would run it, against real aggregators.


const runHealthcheck = (port: number) => {
  const [, , ...args] = healthcheckOf("aggregator")
  const child = spawn(process.execPath, args, { env: { ...process.env, PORT: String(port) }, stdio: "ignore" })
  return new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
}

describe.skipIf(skipWithoutPostgres)(`the aggregator's healthcheck${withoutPostgresNote}`, () => {
  let db: Awaited<ReturnType<typeof freshDatabase>>
  beforeAll(async () => {
    db = await freshDatabase("compose")
  })
  afterAll(async () => {
    await db?.drop()
  })

  it("passes once the aggregator is ready", async () => {
    const agg = spawnAggregator({ DATABASE_URL: db.url })
    try {
      await waitFor(`${await agg.listening}/ready`)
      expect(await runHealthcheck(Number(new URL(agg.url).port))).toBe(0)
    } finally {
      agg.child.kill("SIGTERM")
      await agg.exited
    }
  })

  it("fails while the aggregator is up but its database is unreachable, and when nothing listens", async () => {
    const deadDb = new URL(db.url)
    deadDb.port = String(await freePort())
    const agg = spawnAggregator({ DATABASE_URL: deadDb.toString() })
    try {
      await waitFor(`${await agg.listening}/`)
      expect((await fetch(`${agg.url}/ready`)).status).toBe(503)
      expect(await runHealthcheck(Number(new URL(agg.url).port))).toBe(1)
    } finally {
      agg.child.kill("SIGTERM")
      await agg.exited
    }
    expect(await runHealthcheck(await freePort())).toBe(1)
  })
})

// ---------------------------------------------------------------------------------------------

const dockerCompose = onPath("docker-compose")
const ci = process.env.CI === "true"

describe("docker-compose CLI", () => {
  it.skipIf(dockerCompose === undefined && !ci)(
    dockerCompose === undefined && !ci
      ? "docker-compose config -q (skipped: docker-compose is not on PATH; CI installs it)"
      : "docker-compose config -q accepts the file, with and without the test profile and the scale override",
    () => {
      expect(dockerCompose, "docker-compose must be on PATH in CI (apt-get install docker-compose)").toBeDefined()
      const scale = ["-f", "docker-compose.scale.yml"]
      for (const args of [[], ["--profile", "test"], scale, [...scale, "--profile", "test"]]) {
        const run = spawnSync(dockerCompose!, ["-f", "docker-compose.yml", ...args, "config", "-q"], {
          cwd: root,
          encoding: "utf8"
        })
        expect(run.error).toBeUndefined()
        expect(run.status, `docker-compose ${args.join(" ")} config -q: ${run.stderr}`).toBe(0)
      }
    }
  )
})
