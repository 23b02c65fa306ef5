/**
 * A cookie-keeping HTTP client that behaves like a browser on redirects: it
 * keeps cookies per host and path (HttpOnly ones too, as a browser does, but
 * never shows them to page scripts — here: the test), honours Max-Age, sends
 * Secure cookies only to https or loopback (as browsers treat localhost), and
 * follows no redirect on its own: the test walks each hop.
 */
import { request, type Dispatcher } from 'undici'

interface Cookie { name: string, value: string, host: string, path: string, secure: boolean, httpOnly: boolean, sameSite: string, expiresAt: number }

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
    return await this.hop(u, await request(u.href, { headers: cookie === '' ? {} : { cookie } }))
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
    return await this.hop(u, await request(u.href, { method: 'POST', headers, body: JSON.stringify(body) }))
  }

  /** Keep what the answer sets, read its body. */
  private async hop (u: URL, r: Dispatcher.ResponseData): Promise<Hop> {
    const raw = r.headers['set-cookie']
    const setCookie = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
    for (const line of setCookie) this.store(u, line)
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

  private cookieHeader (u: URL): string {
    const t = this.now()
    const secureContext = u.protocol === 'https:' || ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)
    return this.cookies
      .filter((c) => c.host === u.hostname && c.expiresAt > t && (u.pathname === c.path || u.pathname.startsWith(c.path.endsWith('/') ? c.path : c.path + '/')) && (!c.secure || secureContext))
      .map((c) => `${c.name}=${c.value}`).join('; ')
  }

  private store (u: URL, line: string): void {
    const [pair, ...attrs] = line.split(';').map((s) => s.trim())
    const eq = pair.indexOf('=')
    const c: Cookie = { name: pair.slice(0, eq), value: pair.slice(eq + 1), host: u.hostname, path: '/', secure: false, httpOnly: false, sameSite: '', expiresAt: Infinity }
    for (const a of attrs) {
      const [k, v = ''] = a.split('=')
      const key = k.toLowerCase()
      if (key === 'path') c.path = v
      else if (key === 'secure') c.secure = true
      else if (key === 'httponly') c.httpOnly = true
      else if (key === 'samesite') c.sameSite = v
      else if (key === 'max-age') c.expiresAt = this.now() + Number(v) * 1000
    }
    const i = this.cookies.findIndex((x) => x.name === c.name && x.host === c.host && x.path === c.path)
    if (i !== -1) this.cookies.splice(i, 1)
    this.cookies.push(c)
  }
}

/** `url` with `extra` query parameters added before its fragment (what a tester appends to the emulator's page). */
export function withQuery (url: string, extra: Record<string, string>): string {
  const u = new URL(url)
  for (const [k, v] of Object.entries(extra)) u.searchParams.set(k, v)
  return u.href
}
