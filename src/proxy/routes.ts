/**
 * The route table of one config snapshot. Built once at load/reload; `match`
 * is a few Map lookups on the normalised path's `/` boundaries, longest first,
 * skipping boundaries no prefix has the length of.
 */
import { isReservedPath, normalisePrefix } from '../config/paths.js'
import type { RouteConfig } from '../config/schema.js'
import { createPicker, type Picker } from './picker.js'

export type AuthMode = RouteConfig['auth']

/** One upstream version, with its URL parsed at build time. */
export interface CompiledUpstream {
  /** Position in the route's `upstreams` (what `Picker.pick` returns). */
  readonly index: number
  readonly name: string
  /** The configured URL, as written. */
  readonly url: string
  /** `scheme://host[:port]`, what the HTTP client connects to. */
  readonly origin: string
  /** `host[:port]`: the Host header the upstream receives. */
  readonly host: string
  /** The URL's path without a trailing slash (`''` when none): prefixed to every forwarded path. */
  readonly basePath: string
  /** Configured weight. */
  readonly weight: number
}

export interface CompiledRoute {
  /** Position in `routes` of the config. */
  readonly index: number
  readonly name: string
  /** Normalised prefix: no trailing slash, except the root `/`. */
  readonly prefix: string
  readonly auth: AuthMode
  readonly stripPrefix: boolean
  /** The route as configured (timeout, bodyLimit, rateLimit, …). */
  readonly config: RouteConfig
  readonly upstreams: readonly CompiledUpstream[]
  /** The upstream `canary.rollback` watches, or undefined when the route has no rollback. */
  readonly rollbackUpstream: CompiledUpstream | undefined
  /**
   * The current picker. It starts from the configured weights and changes only
   * through `rollBack` and `restore`; a config reload builds a new table, which ends rollbacks.
   */
  readonly picker: Picker
  /** Roll upstream `index` back (effective weight 0). Returns false if it already was. */
  rollBack (index: number): boolean
  /** Back to the base weights (the config was re-applied). Returns false if nothing was rolled back. */
  restore (): boolean
  /** New base weights (an automatic ramp's share, config order); rollbacks in force stay on top. */
  useWeights (weights: readonly number[]): void
  /** The path to send to `upstream` for a normalised request `path` that this route matched (no query). */
  upstreamPath (path: string, upstream: CompiledUpstream): string
}

export interface RouteTable {
  /** Routes in config order. */
  readonly routes: readonly CompiledRoute[]
  /** The route for a normalised path (see normalisePath), or undefined: longest prefix on a segment boundary. */
  match (path: string): CompiledRoute | undefined
  /** A route by name. */
  get (name: string): CompiledRoute | undefined
}

/** An invalid route set; `path` points into gateway.yaml (`routes[1].upstreams[0].url`). */
export class RouteTableError extends Error {
  readonly path: string
  constructor (path: string, message: string) {
    super(`${path}: ${message}`)
    this.name = 'RouteTableError'
    this.path = path
  }
}

function compileUpstream (u: RouteConfig['upstreams'][number], index: number, where: string): CompiledUpstream {
  let url: URL
  try {
    url = new URL(u.url)
  } catch {
    throw new RouteTableError(`${where}.url`, 'is not a valid URL')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new RouteTableError(`${where}.url`, 'must be http:// or https://')
  if (url.search !== '' || url.hash !== '' || u.url.includes('?') || u.url.includes('#')) {
    throw new RouteTableError(`${where}.url`, 'must not have a query or fragment')
  }
  if (url.username !== '' || url.password !== '') throw new RouteTableError(`${where}.url`, 'must not carry credentials')
  const basePath = url.pathname === '/' ? '' : normalisePrefix(url.pathname)
  if (basePath.includes('//')) throw new RouteTableError(`${where}.url`, 'path must not contain //')
  return { index, name: u.name, url: u.url, origin: url.origin, host: url.host, basePath, weight: u.weight }
}

function compileRoute (r: RouteConfig, index: number): CompiledRoute {
  const where = `routes[${index}]`
  const upstreams = r.upstreams.map((u, j) => compileUpstream(u, j, `${where}.upstreams[${j}]`))
  const prefix = normalisePrefix(r.prefix)
  // Characters stripped from the front of the path when stripPrefix is on;
  // stripping `/` removes nothing.
  const strip = r.stripPrefix && prefix !== '/' ? prefix.length : 0
  const configured = createPicker(r.upstreams, r.canary)
  // The base: the configured weights, or a ramp's; rollBack zeroes upstreams on top of it.
  let base = configured
  let picker = configured
  const rolled = new Set<number>()
  const watched = r.canary?.rollback?.upstream
  const rollbackUpstream = watched === undefined ? undefined : upstreams.find((u) => u.name === watched)
  if (watched !== undefined && rollbackUpstream === undefined) {
    throw new RouteTableError(`${where}.canary.rollback.upstream`, `names no upstream of route '${r.name}'`)
  }
  return {
    index,
    name: r.name,
    prefix,
    auth: r.auth,
    stripPrefix: r.stripPrefix,
    config: r,
    upstreams,
    rollbackUpstream,
    get picker () { return picker },
    rollBack (i: number): boolean {
      if (picker.rolledBack[i] === true) return false
      const next = picker.withRolledBack(i)
      // A weight-0 upstream cannot be rolled back any further.
      if (next.rolledBack[i] !== true) return false
      picker = next
      rolled.add(i)
      return true
    },
    restore (): boolean {
      if (picker === base) return false
      picker = base
      rolled.clear()
      return true
    },
    useWeights (weights: readonly number[]): void {
      base = configured.withWeights(weights)
      picker = base
      for (const i of rolled) picker = picker.withRolledBack(i)
    },
    upstreamPath (path: string, upstream: CompiledUpstream): string {
      const rest = strip === 0 ? path : path.slice(strip) // '' or '/…': the match was on a boundary
      if (upstream.basePath === '') return rest === '' ? '/' : rest
      return rest === '' ? upstream.basePath : upstream.basePath + rest
    }
  }
}

/** Compile the routes of one config snapshot. Throws RouteTableError on a route set the loader should have refused. */
export function buildRouteTable (routes: readonly RouteConfig[]): RouteTable {
  const compiled = routes.map(compileRoute)
  const byPrefix = new Map<string, CompiledRoute>()
  const byName = new Map<string, CompiledRoute>()
  let root: CompiledRoute | undefined
  let maxLen = 0
  for (const r of compiled) {
    if (byPrefix.has(r.prefix) || (r.prefix === '/' && root !== undefined)) {
      throw new RouteTableError(`routes[${r.index}].prefix`, `duplicate prefix '${r.prefix}'`)
    }
    if (byName.has(r.name)) throw new RouteTableError(`routes[${r.index}].name`, `duplicate route name '${r.name}'`)
    byName.set(r.name, r)
    if (r.prefix === '/') { root = r; continue }
    byPrefix.set(r.prefix, r)
    if (r.prefix.length > maxLen) maxLen = r.prefix.length
  }
  // hasLength[n]: some prefix is n characters long. Boundaries at other
  // lengths cannot match, so they cost no string slice and no lookup.
  const hasLength = new Uint8Array(maxLen + 1)
  for (const p of byPrefix.keys()) hasLength[p.length] = 1

  return {
    routes: compiled,
    match (path: string): CompiledRoute | undefined {
      const len = path.length
      // The whole path is a candidate: `/api` matches prefix `/api`.
      if (len <= maxLen && hasLength[len] === 1) {
        const r = byPrefix.get(path)
        if (r !== undefined) return r
      }
      // Then every `/` boundary, longest first: `/api/x` tries `/api` before `/`.
      let i = path.lastIndexOf('/', Math.min(len - 1, maxLen))
      while (i > 0) {
        if (hasLength[i] === 1) {
          const r = byPrefix.get(path.slice(0, i))
          if (r !== undefined) return r
        }
        i = path.lastIndexOf('/', i - 1)
      }
      // Only the root can match a reserved path (no prefix may be one): checked only here.
      return root !== undefined && isReservedPath(path) ? undefined : root
    },
    get (name: string): CompiledRoute | undefined {
      return byName.get(name)
    }
  }
}
