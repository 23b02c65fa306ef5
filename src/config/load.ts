/**
 * Load gateway.yaml: parse YAML, replace ${VAR} / ${VAR:-default} from the
 * environment, fill defaults, validate against the schema and the rules a schema
 * cannot say (unique names, references), then decode durations and sizes.
 * Every problem is reported with its path; nothing half-valid gets through.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml'
import { ConfigError, type ConfigProblem } from './errors.js'
import { checkRules, segments } from './rules.js'
import { GatewayConfigSchema, type GatewayConfig } from './schema.js'

export interface LoadedConfig {
  config: GatewayConfig
  /**
   * sha256 of the file's bytes and of every file it references (token key files), short;
   * identifies the active config in metrics and logs, and tells a reload whether anything changed.
   */
  hash: string
  /** sha256 of the file's bytes alone, short: what canary rollbacks are keyed by (a key rotation does not end them). */
  fileHash: string
  file: string
  /** The line of a path in the file (`tokens.keys[0]`), for problems found after loading (key files). */
  lineOf?: (path: string) => number | undefined
}

const compiled = TypeCompiler.Compile(GatewayConfigSchema)

/** Read and load a config file. Throws ConfigError. */
export async function loadConfigFile (file: string, env: NodeJS.ProcessEnv = process.env): Promise<LoadedConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError(file, [{ path: '', message: `cannot read file: ${(err as NodeJS.ErrnoException).code ?? String(err)}` }])
  }
  const { config, lineOf } = parseConfigText(text, env, file)
  return { config, hash: await hashConfig(text, referencedFiles(config)), fileHash: hashText(text), file, lineOf }
}

export function hashText (text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16)
}

/** Files the config reads besides itself: the token key files and the TLS pair, in config order, without repeats. */
export function referencedFiles (config: GatewayConfig): string[] {
  const files = new Set<string>()
  const tls = config.listen.tls
  if (tls !== undefined) {
    files.add(tls.certFile)
    files.add(tls.keyFile)
  }
  for (const k of config.tokens.keys) {
    if (k.privateKeyFile !== undefined) files.add(k.privateKeyFile)
    if (k.publicKeyFile !== undefined) files.add(k.publicKeyFile)
  }
  return [...files]
}

/**
 * The config's identity: its text plus the bytes of every referenced file, so that a
 * key file replaced in place (a Kubernetes Secret rotation) is a change. Without
 * referenced files it is hashText(text). An unreadable file hashes as such: building the
 * token keys then reports it.
 */
export async function hashConfig (text: string, files: readonly string[]): Promise<string> {
  if (files.length === 0) return hashText(text)
  const h = createHash('sha256').update(text)
  for (const f of files) {
    h.update('\u0000' + f + '\u0000')
    try {
      h.update(await readFile(f))
    } catch (err) {
      h.update('\u0000unreadable:' + ((err as NodeJS.ErrnoException).code ?? 'error'))
    }
  }
  return h.digest('hex').slice(0, 16)
}

/** Parse config text. Throws ConfigError listing every problem. */
export function parseConfig (text: string, env: NodeJS.ProcessEnv = process.env, file = 'gateway.yaml'): GatewayConfig {
  return parseConfigText(text, env, file).config
}

function parseConfigText (text: string, env: NodeJS.ProcessEnv, file: string): { config: GatewayConfig, lineOf: (path: string) => number | undefined } {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length > 0) {
    // The first few YAML errors say it all; later ones cascade from them.
    throw new ConfigError(file, doc.errors.slice(0, 3).map((e) => ({
      path: '',
      message: `YAML: ${e.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')}`,
      line: e.linePos?.[0]?.line
    })))
  }
  const lineOf = (path: string): number | undefined => {
    let node: unknown = doc.contents
    let found: YamlNode | undefined
    for (const key of pathSegments(path)) {
      if (isMap(node) || isSeq(node)) {
        const next = node.get(key, true)
        if (next === undefined) break
        node = next
        found = next as YamlNode
      } else break
    }
    const offset = found?.range?.[0]
    return offset === undefined ? undefined : lineCounter.linePos(offset).line
  }

  const raw: unknown = doc.toJS() ?? {}
  const problems: ConfigProblem[] = []
  const interpolated = interpolate(raw, [], env, problems)
  if (typeof interpolated !== 'object' || interpolated === null || Array.isArray(interpolated)) {
    throw new ConfigError(file, [{ path: '', message: 'must be a YAML mapping' }])
  }

  const value = Value.Default(GatewayConfigSchema, Value.Convert(GatewayConfigSchema, interpolated))
  const valid = compiled.Check(value)
  if (!valid) problems.push(...schemaProblems(value, new Set(problems.map((p) => p.path))))
  // The rules run even when the schema failed, so that one pass reports everything
  // (each rule reading only fields the schema found well-formed).
  const config = valid ? compiled.Decode(value) : value as GatewayConfig
  problems.push(...checkRules(config, problems.map((p) => p.path)))
  if (problems.length > 0) {
    for (const p of problems) p.line ??= lineOf(p.path)
    throw new ConfigError(file, inFileOrder(dedupe(problems)))
  }
  return { config, lineOf }
}

/** Problems sorted by line; those without one (the whole file) last. */
export function inFileOrder (problems: ConfigProblem[]): ConfigProblem[] {
  return problems.sort((a, b) => (a.line ?? Infinity) - (b.line ?? Infinity))
}

/** The schema's complaints about `value`, once per path; `skip`: paths already reported (an unset variable). */
function schemaProblems (value: unknown, skip: ReadonlySet<string>): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const missing = new Set<string>()
  for (const err of compiled.Errors(value)) {
    const path = toDotted(pointerSegments(err.path))
    // a missing key is also "not a string" etc.: say it is required, once
    if (skip.has(path) || missing.has(path)) continue
    if (err.type === ValueErrorType.ObjectRequiredProperty) missing.add(path)
    problems.push({ path, message: describe(err) })
  }
  return problems
}

/** `routes[1].upstreams[0].url` → ['routes', 1, 'upstreams', 0, 'url']. */
function pathSegments (path: string): Array<string | number> {
  return segments(path).map((s) => /^\d+$/.test(s) ? Number(s) : s)
}

const VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/** Replace ${VAR} and ${VAR:-default} in every string; `$${` escapes a literal `${`. */
function interpolate (v: unknown, path: Array<string | number>, env: NodeJS.ProcessEnv, problems: ConfigProblem[]): unknown {
  if (typeof v === 'string') {
    if (!v.includes('${')) return v
    const parts = v.split('$${')
    return parts.map((part) => part.replace(VAR, (_m, name: string, def: string | undefined) => {
      const val = env[name]
      if (val !== undefined && val !== '') return val
      if (def !== undefined) return def
      problems.push({ path: toDotted(path), message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` })
      return ''
    })).join('${')
  }
  if (Array.isArray(v)) return v.map((item, i) => interpolate(item, [...path, i], env, problems))
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = {}
    for (const [k, item] of Object.entries(v)) out[k] = interpolate(item, [...path, k], env, problems)
    return out
  }
  return v
}

function pointerSegments (pointer: string): Array<string | number> {
  if (pointer === '') return []
  return pointer.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~')).map((s) => /^\d+$/.test(s) ? Number(s) : s)
}

export function toDotted (segments: Array<string | number>): string {
  let out = ''
  for (const s of segments) out += typeof s === 'number' ? `[${s}]` : (out === '' ? s : `.${s}`)
  return out
}

function describe (err: ValueError): string {
  const s = err.schema as Record<string, unknown>
  switch (err.type) {
    case ValueErrorType.ObjectAdditionalProperties: return unknownKey(String(pointerSegments(err.path).at(-1)), Object.keys(s.properties ?? {}))
    case ValueErrorType.ObjectRequiredProperty: return 'is required'
    case ValueErrorType.NumberMinimum:
    case ValueErrorType.IntegerMinimum: return `must be >= ${String(s.minimum)}`
    case ValueErrorType.NumberMaximum:
    case ValueErrorType.IntegerMaximum: return `must be <= ${String(s.maximum)}`
    case ValueErrorType.NumberExclusiveMinimum:
    case ValueErrorType.IntegerExclusiveMinimum: return `must be > ${String(s.exclusiveMinimum)}`
    case ValueErrorType.Integer: return 'must be an integer'
    case ValueErrorType.Number: return 'must be a number'
    case ValueErrorType.String: return 'must be a string'
    case ValueErrorType.Boolean: return 'must be true or false'
    case ValueErrorType.Array: return 'must be a list'
    case ValueErrorType.Object: return 'must be a mapping'
    case ValueErrorType.ArrayMinItems: return `must have at least ${String(s.minItems)} item(s)`
    case ValueErrorType.StringMinLength: return `must be at least ${String(s.minLength)} characters`
    case ValueErrorType.StringPattern: return patternMessage(String(s.pattern))
    case ValueErrorType.Union: {
      const options = (s.anyOf as Array<Record<string, unknown>> | undefined)?.map((o) => o.const).filter((c) => c !== undefined)
      if (options !== undefined && options.length > 0) return `must be one of ${options.join(' | ')}`
      return 'has the wrong type'
    }
    default: return err.message
  }
}

function patternMessage (pattern: string): string {
  if (pattern.includes('(ms|s|m|h|d)')) return 'must be a duration like 800ms, 30s, 15m, 2h, 7d'
  if (pattern.includes('[kKmMgG]')) return 'must be a size like 512b, 16kb, 1mb'
  if (pattern.startsWith('^https?://')) return 'must be an http:// or https:// URL'
  if (pattern === '^/') return 'must start with /'
  if (pattern.endsWith(':[0-9]{1,5}$')) return 'must be host:port'
  return `must match ${pattern}`
}

function dedupe (problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>()
  return problems.filter((p) => {
    const k = `${p.path}\u0000${p.message}`
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
}

/** `unknown key — did you mean timeout?` when a known key is a typo away. */
function unknownKey (key: string, known: readonly string[]): string {
  let best: string | undefined
  let bestDistance = Infinity
  for (const k of known) {
    const d = editDistance(key.toLowerCase(), k.toLowerCase())
    if (d < bestDistance) { best = k; bestDistance = d }
  }
  // a third of the word at most (and at least one edit): `timout`→`timeout`, not `colour`→`host`
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(best.length / 3)) ? `unknown key — did you mean ${best}?` : 'unknown key'
}

/** Edit distance: insertions, deletions, substitutions and swaps of neighbours (`prot` → `port` is one). */
function editDistance (a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => i === 0 ? j : j === 0 ? i : 0))
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1))
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1)
    }
  }
  return d[a.length][b.length]
}
