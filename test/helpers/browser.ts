/**
 * A cookie-keeping HTTP client that behaves like a browser on redirects: it
 * keeps cookies per host (or `Domain`) and path (HttpOnly ones too, as a browser
 * does, but never shows them to page scripts — here: the test), honours Max-Age,
 * takes and sends Secure cookies only in a secure context (https, or loopback and
 * `*.localhost`, as browsers treat them), applies the cookie prefixes of RFC 6265bis
 * (`__Host-`: Secure, no Domain, Path=/; `__Secure-`: Secure), and follows no
 * redirect on its own: the test walks each hop. Every host name resolves to
 * 127.0.0.1, so a test can put the gateway and its sibling sites on names
 * (`localhost`, `evil.localhost`) and see what a browser would send where.
 */
import { Agent, request, type Dispatcher } from 'undici'
import { isIP } from 'node:net'

/** `host`: the host that set it; `domain`: set for a `Domain=` cookie (then sent to that domain and its subdomains). */
export interface Cookie { name: string, value: string, host: string, domain?: string | undefined, path: string, secure: boolean, httpOnly: boolean, sameSite: string, expiresAt: number }

type LookupCallback = (err: Error | null, address: string | Array<{ address: string, family: number }>, family?: number) => void
/** Every name is this machine (a browser's hosts file for the tests). */
const loopback = new Agent({
  connect: {
    lookup: (_host: string, opts: { all?: boolean }, cb: LookupCallback) => {
      if (opts.all === true) cb(null, [{ address: '127.0.0.1', family: 4 }])
      else cb(null, '127.0.0.1', 4)
    }
  } as unknown as Agent.Options['connect']
})

/** Browsers treat these as secure contexts even over http. */
function secureContext (u: URL): boolean {
  const h = u.hostname
  return u.protocol === 'https:' || h === '127.0.0.1' || h === '[::1]' || h === 'localhost' || h.endsWith('.localhost')
}

/** `host` is `domain` or a subdomain of it (an IP address only matches itself). */
function domainMatch (host: string, domain: string): boolean {
  if (host === domain) return true
  return isIP(host.replace(/^\[|\]$/g, '')) === 0 && host.endsWith('.' + domain)
}

export interface Hop {
  status: number
  location: string | undefined
  setCookie: string[]
  text: string
  json: { code: number, message: string, data: any } | undefined
}

export class Browser {
  readonly cookies: Cookie[] = []
  constructor (private readonly now: () => number = Date.now) {}

  /** GET `url` with this browser's cookies; store what it sets. */
  async get (url: string): Promise<Hop> {
    const u = new URL(url)
    u.hash = '' // a browser never sends the fragment
    const cookie = this.cookieHeader(u)
    return await this.hop(u, await request(u.href, { headers: cookie === '' ? {} : { cookie }, dispatcher: loopback }))
  }

  /**
   * POST `body` as JSON with this browser's cookies for `url`, as a page's same-origin
   * `fetch` does (`credentials: 'omit'` sends none, as a cross-origin fetch without them).
   */
  async post (url: string, body: unknown, opts: { credentials?: 'include' | 'omit' } = {}): Promise<Hop> {
    const u = new URL(url)
    const cookie = opts.credentials === 'omit' ? '' : this.cookieHeader(u)
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (cookie !== '') headers.cookie = cookie
    return await this.hop(u, await request(u.href, { method: 'POST', headers, body: JSON.stringify(body), dispatcher: loopback }))
  }

  /** Keep what the answer sets, read its body. */
  private async hop (u: URL, r: Dispatcher.ResponseData): Promise<Hop> {
    const raw = r.headers['set-cookie']
    const setCookie = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
    for (const line of setCookie) this.receive(u.href, line)
    const text = await r.body.text()
    let json: Hop['json']
    try { json = JSON.parse(text) } catch {}
    return { status: r.statusCode, location: r.headers.location as string | undefined, setCookie, text, json }
  }

  /** The value of the cookie `name` this browser would send to `url`, if any. */
  cookie (url: string, name: string): string | undefined {
    const prefix = `${name}=`
    return this.cookieHeader(new URL(url)).split('; ').find((c) => c.startsWith(prefix))?.slice(prefix.length)
  }

  /** The Cookie header for `u`: longer paths first, as browsers order them. */
  private cookieHeader (u: URL): string {
    const t = this.now()
    const secure = secureContext(u)
    return this.cookies
      .filter((c) => (c.domain === undefined ? c.host === u.hostname : domainMatch(u.hostname, c.domain)) && c.expiresAt > t &&
        (u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : c.path + '/')) && (!c.secure || secure))
      .sort((a, b) => b.path.length - a.path.length)
      .map((c) => `${c.name}=${c.value}`).join('; ')
  }

  /**
   * What a browser does with a `Set-Cookie` line in a response from `url` (also how a
   * test plays a sibling site or a network attacker planting a cookie): true when kept.
   * Refused as browsers refuse them: a `Domain` the host is not under, a Secure cookie
   * from an insecure context, a `__Secure-` one without Secure, a `__Host-` one without
   * Secure, with a Domain or with a Path other than `/`.
   */
  receive (url: string, line: string): boolean {
    const u = new URL(url)
    const [pair, ...attrs] = line.split(';').map((s) => s.trim())
    const eq = pair.indexOf('=')
    const c: Cookie = { name: pair.slice(0, eq), value: pair.slice(eq + 1), host: u.hostname, path: '/', secure: false, httpOnly: false, sameSite: '', expiresAt: Infinity }
    let pathSet = false
    for (const a of attrs) {
      const [k, v = ''] = a.split('=')
      const key = k.toLowerCase()
      if (key === 'path') { c.path = v; pathSet = true } else if (key === 'domain') c.domain = v.replace(/^\./, '').toLowerCase()
      else if (key === 'secure') c.secure = true
      else if (key === 'httponly') c.httpOnly = true
      else if (key === 'samesite') c.sameSite = v
      else if (key === 'max-age') c.expiresAt = this.now() + Number(v) * 1000
    }
    if (c.domain !== undefined && !domainMatch(u.hostname, c.domain)) return false
    if (c.secure && !secureContext(u)) return false
    if (c.name.startsWith('__Secure-') && !c.secure) return false
    if (c.name.startsWith('__Host-') && (!c.secure || c.domain !== undefined || !pathSet || c.path !== '/')) return false
    const i = this.cookies.findIndex((x) => x.name === c.name && x.host === c.host && x.domain === c.domain && x.path === c.path)
    if (i !== -1) this.cookies.splice(i, 1)
    this.cookies.push(c)
    return true
  }
}

/** `url` with `extra` query parameters added before its fragment (what a tester appends to the emulator's page). */
export function withQuery (url: string, extra: Record<string, string>): string {
  const u = new URL(url)
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v)
  return u.href
}
