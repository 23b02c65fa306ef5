/**
 * Where a URL goes, and whether it may carry the token. Mini-program runtimes
 * have no `URL` class, so this parses by hand, strictly: the token is attached
 * only to `baseUrl` itself and paths under it; anything doubtful (userinfo,
 * backslashes, another scheme, host or port) is foreign and gets no token.
 */

export interface Target {
  /** The absolute URL to call. */
  url: string
  /** Same scheme, host, port and base path as `baseUrl`: the token may go there. */
  ours: boolean
}

interface Parts { scheme: string, authority: string, rest: string }

const ABSOLUTE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#\\]*)(.*)$/
const DEFAULT_PORT: Record<string, string> = { http: '80', https: '443', ws: '80', wss: '443' }

function split (url: string): Parts | null {
  const m = ABSOLUTE.exec(url)
  return m === null ? null : { scheme: m[1].toLowerCase(), authority: m[2].toLowerCase(), rest: m[3] }
}

function hostPort (scheme: string, authority: string): string {
  const port = DEFAULT_PORT[scheme]
  return port !== undefined && authority.endsWith(':' + port) ? authority.slice(0, -(port.length + 1)) : authority
}

/** The socket scheme for an HTTP one (https → wss). */
function socketScheme (scheme: string): string {
  if (scheme === 'https') return 'wss'
  if (scheme === 'http') return 'ws'
  return scheme
}

export interface Base { scheme: string, authority: string, path: string, text: string }

/** Parse and check `baseUrl` once: `https://host[:port][/path]`, no query, no userinfo. */
export function parseBase (baseUrl: string): Base {
  const p = typeof baseUrl === 'string' ? split(baseUrl.trim()) : null
  if (p === null || (p.scheme !== 'https' && p.scheme !== 'http') || p.authority === '' || p.authority.includes('@') || /[?#\\]/.test(p.rest)) {
    throw new TypeError(`wegate-miniprogram: baseUrl must be like https://api.example.com (got ${String(baseUrl)})`)
  }
  const path = p.rest.replace(/\/+$/, '')
  return { scheme: p.scheme, authority: hostPort(p.scheme, p.authority), path, text: `${p.scheme}://${p.authority}${path}` }
}

/**
 * Resolve `url` against the base. Relative URLs (`/api/x`, `api/x`) go under
 * the base; absolute ones are left as they are and are ours only when they
 * point under the base. `socket`: the http(s) base is used as ws(s).
 */
export function resolve (base: Base, url: string, socket = false): Target {
  if (typeof url !== 'string' || url === '') throw new TypeError('wegate-miniprogram: url must be a non-empty string')
  const scheme = socket ? socketScheme(base.scheme) : base.scheme
  const prefix = `${scheme}://${base.text.slice(base.scheme.length + 3)}`
  if (url.startsWith('//')) return { url: `${scheme}:${url}`, ours: isOurs(base, scheme, `${scheme}:${url}`) }
  if (!/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(url)) return { url: prefix + (url.startsWith('/') ? url : '/' + url), ours: true }
  return { url, ours: isOurs(base, scheme, url) }
}

function isOurs (base: Base, scheme: string, url: string): boolean {
  const p = split(url)
  if (p === null || p.scheme !== scheme || p.authority.includes('@')) return false
  if (hostPort(p.scheme, p.authority) !== base.authority) return false
  if (base.path === '') return p.rest === '' || /^[/?#]/.test(p.rest)
  if (!p.rest.startsWith(base.path)) return false
  const after = p.rest.slice(base.path.length)
  return after === '' || /^[/?#]/.test(after)
}
