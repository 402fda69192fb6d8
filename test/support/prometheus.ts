/** One sample of a Prometheus text exposition. */
export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Exposition {
  readonly types: ReadonlyMap<string, string>
  readonly help: ReadonlyMap<string, string>
  readonly samples: ReadonlyArray<Sample>
}

const sampleLine = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/
const labelPair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y

const unescape = (v: string) => v.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c))

const parseValue = (v: string) =>
  v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : v === "NaN" ? NaN : Number(v)

/**
 * A strict parser of the text format (version 0.0.4) as this service writes it: throws on any line it
 * does not understand, on a sample before its `# TYPE`, or on a value that is not a number.
 */
export const parseExposition = (text: string): Exposition => {
  const types = new Map<string, string>()
  const help = new Map<string, string>()
  const samples: Array<Sample> = []
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline")
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("# HELP ")) {
      const [name, ...rest] = line.slice(7).split(" ")
      help.set(name, rest.join(" "))
      continue
    }
    if (line.startsWith("# TYPE ")) {
      const [name, type] = line.slice(7).split(" ")
      if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(type)) throw new Error(`bad type: ${line}`)
      if (types.has(name)) throw new Error(`TYPE given twice for ${name}`)
      types.set(name, type)
      continue
    }
    const m = sampleLine.exec(line)
    if (m === null) throw new Error(`not a sample line: ${JSON.stringify(line)}`)
    const [, name, labelText, valueText] = m
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, "")
    if (!types.has(family)) throw new Error(`sample before its TYPE: ${line}`)
    const labels: Record<string, string> = {}
    if (labelText !== undefined && labelText !== "") {
      labelPair.lastIndex = 0
      while (labelPair.lastIndex < labelText.length) {
        const at = labelPair.lastIndex
        const p = labelPair.exec(labelText)
        if (p === null || p.index !== at) throw new Error(`bad labels: ${line}`)
        labels[p[1]] = unescape(p[2])
      }
    }
    const value = parseValue(valueText)
    if (Number.isNaN(value) && valueText !== "NaN") throw new Error(`bad value: ${line}`)
    samples.push({ name, labels, value })
  }
  return { types, help, samples }
}

const matches = (labels: Readonly<Record<string, string>>, want: Readonly<Record<string, string>>) =>
  Object.entries(want).every(([k, v]) => labels[k] === v)

/** The one sample of `name` whose labels include `labels`; throws when there is not exactly one. */
export const valueOf = (e: Exposition, name: string, labels: Record<string, string> = {}): number => {
  const found = e.samples.filter((s) => s.name === name && matches(s.labels, labels))
  if (found.length !== 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`)
  return found[0].value
}

/** The sum over every sample of `name` whose labels include `labels` (0 when there is none). */
export const sumOf = (e: Exposition, name: string, labels: Record<string, string> = {}): number =>
  e.samples.filter((s) => s.name === name && matches(s.labels, labels)).reduce((n, s) => n + s.value, 0)
