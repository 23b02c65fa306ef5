/**
 * Load gateway.yaml: parse YAML, replace ${VAR} / ${VAR:-default} from the
 * environment, fill defaults, validate against the schema and the rules a schema
 * cannot say (unique names, references), then decode durations and sizes.
 * Every problem is reported with its path; nothing half-valid gets through.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { isIP } from 'node:net'
import { Value, ValueErrorType, type ValueError } from '@sinclair/typebox/value'
import { TypeCompiler } from '@sinclair/typebox/compiler'
import { isMap, isSeq, LineCounter, parseDocument, type Node as YamlNode } from 'yaml'
import { ConfigError, type ConfigProblem } from './errors.js'
import { isReservedPath, normalisePrefix } from './paths.js'
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
  const config = parseConfig(text, env, file)
  return { config, hash: await hashConfig(text, referencedFiles(config)), fileHash: hashText(text), file }
}

export function hashText (text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16)
}

/** Files the config reads besides itself: the token key files, in config order, without repeats. */
export function referencedFiles (config: GatewayConfig): string[] {
  const files = new Set<string>()
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
  const lineOf = (path: Array<string | number>): number | undefined => {
    let node: unknown = doc.contents
    let found: YamlNode | undefined
    for (const key of path) {
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
  if (!compiled.Check(value)) {
    // A field already reported for an unset variable needs no second message.
    const reported = new Set(problems.map((p) => p.path))
    const missing = new Set<string>()
    for (const err of compiled.Errors(value)) {
      const segments = pointerSegments(err.path)
      const path = toDotted(segments)
      // a missing key is also "not a string" etc.: say it is required, once
      if (reported.has(path) || missing.has(path)) continue
      if (err.type === ValueErrorType.ObjectRequiredProperty) missing.add(path)
      problems.push({ path, message: describe(err), line: lineOf(segments) })
    }
  }
  if (problems.length === 0) problems.push(...crossCheck(value as unknown as RawConfig))
  if (problems.length > 0) throw new ConfigError(file, dedupe(problems))
  return compiled.Decode(value)
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
    case ValueErrorType.ObjectAdditionalProperties: return 'unknown key'
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

interface RawConfig {
  workers: number | 'auto'
  store: { type: string, url?: string, cluster?: { nodes: string[] }, sentinel?: { nodes: string[] } }
  trustProxy: boolean | string[]
  wechat: { apps: Array<{ appId: string }> }
  tokens: { algorithm: string, keys: Array<{ kid: string, secret?: string, privateKeyFile?: string, publicKeyFile?: string }> }
  routes: Array<{
    name: string
    prefix: string
    upstreams: Array<{ name: string, weight: number }>
    canary?: { upstream?: string, rollback?: { upstream: string } }
  }>
}

/** Rules the schema cannot express. Runs only on a schema-valid value. */
function crossCheck (c: RawConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const dup = (list: string[], path: (i: number) => string, what: string) => {
    const seen = new Map<string, number>()
    list.forEach((v, i) => {
      if (seen.has(v)) problems.push({ path: path(i), message: `duplicate ${what} '${v}' (also at index ${String(seen.get(v))})` })
      else seen.set(v, i)
    })
  }
  problems.push(...storeCheck(c.store))
  dup(c.wechat.apps.map((a) => a.appId), (i) => `wechat.apps[${i}].appId`, 'appId')
  dup(c.tokens.keys.map((k) => k.kid), (i) => `tokens.keys[${i}].kid`, 'kid')
  c.tokens.keys.forEach((k, i) => {
    if (c.tokens.algorithm === 'HS256') {
      if (k.secret === undefined) problems.push({ path: `tokens.keys[${i}].secret`, message: 'is required with algorithm HS256' })
    } else if (k.privateKeyFile === undefined && k.publicKeyFile === undefined) {
      problems.push({ path: `tokens.keys[${i}]`, message: `needs privateKeyFile or publicKeyFile with algorithm ${c.tokens.algorithm}` })
    } else if (i === 0 && k.privateKeyFile === undefined) {
      problems.push({ path: 'tokens.keys[0].privateKeyFile', message: 'is required: the first key signs' })
    }
  })
  // Sessions, revocations, rate-limit counters and rollbacks must be shared by every worker.
  if (c.workers !== 1 && c.store.type === 'memory') {
    problems.push({ path: 'workers', message: `${String(c.workers)} workers need store.type redis (the memory store is one process's)` })
  }
  if (Array.isArray(c.trustProxy)) {
    c.trustProxy.forEach((entry, i) => {
      const [addr, bits, extra] = entry.split('/')
      const family = isIP(addr)
      const max = family === 6 ? 128 : 32
      if (family === 0 || extra !== undefined || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max))) {
        problems.push({ path: `trustProxy[${i}]`, message: `'${entry}' is not an IP address or CIDR` })
      }
    })
  }
  dup(c.routes.map((r) => r.name), (i) => `routes[${i}].name`, 'route name')
  dup(c.routes.map((r) => normalisePrefix(r.prefix)), (i) => `routes[${i}].prefix`, 'prefix')
  c.routes.forEach((r, i) => {
    const p = normalisePrefix(r.prefix)
    if (isReservedPath(p)) {
      problems.push({ path: `routes[${i}].prefix`, message: `'${r.prefix}' is reserved by the gateway` })
    }
    if (/\/\/|\/\.\.?(\/|$)|[%;?#\\]/.test(r.prefix)) {
      problems.push({ path: `routes[${i}].prefix`, message: 'must be a plain normalised path (no //, . or .. segments, %, ;, ?, #, \\)' })
    }
    dup(r.upstreams.map((u) => u.name), (j) => `routes[${i}].upstreams[${j}].name`, 'upstream name')
    if (r.upstreams.every((u) => u.weight === 0)) {
      problems.push({ path: `routes[${i}].upstreams`, message: 'at least one upstream needs a weight > 0' })
    }
    const names = new Set(r.upstreams.map((u) => u.name))
    const ref = (name: string | undefined, path: string) => {
      if (name !== undefined && !names.has(name)) problems.push({ path, message: `names no upstream of route '${r.name}'` })
    }
    ref(r.canary?.upstream, `routes[${i}].canary.upstream`)
    ref(r.canary?.rollback?.upstream, `routes[${i}].canary.rollback.upstream`)
  })
  return problems
}

/** One Redis topology at most (none: the default single server); port numbers in range. */
function storeCheck (store: RawConfig['store']): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const topologies = (['url', 'cluster', 'sentinel'] as const).filter((k) => store[k] !== undefined)
  if (store.type === 'redis' && topologies.length > 1) {
    problems.push({ path: 'store', message: `set only one of url, cluster, sentinel (found ${topologies.join(' and ')})` })
  }
  for (const k of ['cluster', 'sentinel'] as const) {
    const t = store[k]
    if (t === undefined) continue
    if (store.type !== 'redis') problems.push({ path: `store.${k}`, message: 'needs store.type redis' })
    t.nodes.forEach((node, i) => {
      const port = Number(node.slice(node.lastIndexOf(':') + 1))
      if (port < 1 || port > 65535) problems.push({ path: `store.${k}.nodes[${i}]`, message: 'port must be 1…65535' })
    })
  }
  return problems
}
