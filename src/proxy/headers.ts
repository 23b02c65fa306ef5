/**
 * What crosses the gateway in headers, both ways. The upstream trusts
 * X-OpenID / X-UnionID / X-AppID, so no client-sent copy may survive — in any
 * case, any number of copies, or the underscore spelling that nginx/CGI-style
 * servers fold into the same variable (X_OpenID → HTTP_X_OPENID).
 */
import type { IncomingHttpHeaders } from 'node:http'

export const IDENTITY_HEADERS = ['x-openid', 'x-unionid', 'x-appid'] as const

/**
 * The browser-login cookie (auth/web-login.ts). `__Host-`: a browser takes it only from
 * this host, over https (or localhost), with `Path=/` and no `Domain` — a sibling
 * subdomain or a plain-http response cannot plant it. `Path=/` sends it with every
 * request, so it is removed from the Cookie header before anything goes upstream.
 */
export const LOGIN_COOKIE = '__Host-wegate_wx_login'

/**
 * `cookie` without the login cookie's pairs; undefined when nothing else is left. Near
 * free for the usual request: a header that does not contain the name is returned as is.
 */
export function withoutLoginCookie (cookie: string): string | undefined {
  if (cookie.indexOf(LOGIN_COOKIE) === -1) return cookie
  const kept: string[] = []
  for (const part of cookie.split(';')) {
    if (cookieName(part) === LOGIN_COOKIE || part.trim() === '') continue
    kept.push(part.trim())
  }
  return kept.length === 0 ? undefined : kept.join('; ')
}

/** The name of one `name=value` pair of a Cookie header, or of a Set-Cookie line (its first pair). */
export function cookieName (pair: string): string {
  const eq = pair.indexOf('=')
  return (eq === -1 ? pair : pair.slice(0, eq)).trim()
}

/**
 * Whether a Set-Cookie line (upstream → client) sets the login cookie: only the gateway may.
 * A backend (or a Set-Cookie injection in one) could otherwise plant an attacker's login
 * cookie — proxied responses come from the gateway's host, which `__Host-` does not stop —
 * or clear a login in progress. Compared ignoring case, as some clients do.
 */
export function setsLoginCookie (line: string): boolean {
  return cookieName(line).toLowerCase() === LOGIN_COOKIE_LOWER
}
const LOGIN_COOKIE_LOWER = LOGIN_COOKIE.toLowerCase()

/** RFC 9110 §7.6.1 connection-specific fields, plus the proxy-* ones. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'http2-settings'
])

/**
 * Headers the gateway sets (or settles) itself on the way upstream; client copies are dropped.
 * `expect`: Node's server has already answered `100-continue` (and 417 to anything else),
 * and undici refuses to send an Expect header at all (it would turn every such upload into a 502).
 */
const GATEWAY_SET = new Set([
  'host', 'x-request-id', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'x-real-ip', 'expect',
  'traceparent', 'tracestate' // http/trace-context.ts decides what continues
])

/**
 * Names a backend may take as the caller's identity: ours (X-WeGate-Channel: the caller's app type; X-Phone-Number: the number
 * verified with /auth/phone, on `injectPhone` routes), and the X-WX-* set that
 * WeChat Cloud Hosting injects (a service moved from CloudBase may still trust them).
 */
const IDENTITY_NAMES = new Set([
  'x-openid', 'x-unionid', 'x-appid', 'x-phone-number', 'x-wegate-channel',
  'x-wx-openid', 'x-wx-unionid', 'x-wx-appid', 'x-wx-from-openid', 'x-wx-from-unionid', 'x-wx-from-appid'
])

/** True for header names that are, or could be read as, an identity header. */
export function isIdentityHeader (lowerName: string): boolean {
  // Cheap first filter: every identity name starts with `x` and is 7-17 characters long.
  if (lowerName.length < 7 || lowerName.length > 17 || lowerName.charCodeAt(0) !== 0x78 /* x */) return false
  if (IDENTITY_NAMES.has(lowerName)) return true
  // nginx/CGI-style servers fold `_` into `-`: X_OpenID reads as X-OpenID there.
  return lowerName.includes('_') && IDENTITY_NAMES.has(lowerName.replace(/_/g, '-'))
}

/**
 * Headers that claim where the request came from (client address, scheme, port,
 * path prefix) or which URL it really asked for. Backends and their frameworks
 * believe them (Express `trust proxy`, Spring's ForwardedHeaderFilter, Symfony and
 * IIS reading X-Original-URL / X-Rewrite-URL as the path to route), so a client must
 * not be able to send them through the gateway.
 * - FWD_PROXY: the X-Forwarded-* family (and ingress-nginx's X-Original-Forwarded-For):
 *   what trustProxy is about. Kept from a trusted proxy, dropped from anyone else.
 * - FWD_ALWAYS: single-value client-IP claims of CDNs and servers, and URL overrides.
 *   Dropped from everyone: whether the hop in front removed a client's copy is
 *   unknowable here, and the client address travels in X-Forwarded-For.
 * Underscore spellings (`X_Forwarded_Port`) are read as the same name by CGI-style
 * servers; proxies pass them through untouched, so they are the client's: always dropped.
 */
const FWD_NONE = 0
const FWD_PROXY = 1
const FWD_ALWAYS = 2
/** A real header (handled elsewhere) whose underscore spelling only a misreading upstream would act on. */
const FWD_SPELLING = 3

const FORWARDING_NAMES: ReadonlyArray<readonly [string, number]> = [
  ['x-original-forwarded-for', FWD_PROXY],
  ['x-real-ip', FWD_ALWAYS], // in GATEWAY_SET too; listed here for its `x_real_ip` spelling
  ['x-client-ip', FWD_ALWAYS],
  ['true-client-ip', FWD_ALWAYS],
  ['cf-connecting-ip', FWD_ALWAYS],
  ['fastly-client-ip', FWD_ALWAYS],
  ['x-cluster-client-ip', FWD_ALWAYS],
  ['x-originating-ip', FWD_ALWAYS],
  ['x-remote-ip', FWD_ALWAYS],
  ['x-remote-addr', FWD_ALWAYS],
  ['x-original-url', FWD_ALWAYS],
  ['x-rewrite-url', FWD_ALWAYS],
  // Host overrides: frameworks and CGI-style servers build absolute URLs (redirects, password-reset
  // links) or pick a virtual host from them. A trusted proxy may describe the original host with them.
  ['x-host', FWD_PROXY],
  ['x-http-host-override', FWD_PROXY],
  ['x-host-override', FWD_PROXY],
  ['x-original-host', FWD_PROXY],
  // Message framing spelled with `_`: an upstream folding `_` into `-` would frame the body by the
  // client's claim instead of the one the gateway sends (request smuggling). The `-` spellings are
  // the real headers: Content-Length passes, Transfer-Encoding is hop-by-hop.
  ['transfer-encoding', FWD_SPELLING],
  ['content-length', FWD_SPELLING]
]
const X_FORWARDED = 'x-forwarded-'

// Exact names by length, so most headers are ruled out by one array read.
const FORWARDING_BY_LENGTH: Array<Array<readonly [string, number]> | undefined> = []
for (const entry of FORWARDING_NAMES) (FORWARDING_BY_LENGTH[entry[0].length] ??= []).push(entry)
// Every name above starts with one of these: x, t(rue-, ransfer-), c(f-, ontent-), f(astly-).
const FIRST = new Uint8Array(128)
for (const ch of 'xtcf') FIRST[ch.charCodeAt(0)] = 1
const MIN_LENGTH = Math.min(...FORWARDING_NAMES.map((e) => e[0].length), X_FORWARDED.length + 1)

/** `name[from..]` equals `canon[from..]` for `length` characters, reading `_` as `-` (no allocation). */
function foldedEquals (name: string, canon: string, from: number, length: number): boolean {
  for (let i = from; i < from + length; i++) {
    let c = name.charCodeAt(i)
    if (c === 0x5f /* _ */) c = 0x2d /* - */
    if (c !== canon.charCodeAt(i)) return false
  }
  return true
}

/** FWD_NONE, FWD_PROXY, FWD_ALWAYS or FWD_SPELLING for a lower-cased header name. */
function forwardingClass (lowerName: string): number {
  const len = lowerName.length
  const c0 = lowerName.charCodeAt(0)
  if (len < MIN_LENGTH || FIRST[c0] !== 1) return FWD_NONE
  if (c0 === 0x78 /* x */ && len > X_FORWARDED.length && foldedEquals(lowerName, X_FORWARDED, 0, X_FORWARDED.length)) return FWD_PROXY
  const candidates = FORWARDING_BY_LENGTH[len]
  if (candidates === undefined) return FWD_NONE
  for (let k = 0; k < candidates.length; k++) {
    if (foldedEquals(lowerName, candidates[k][0], 0, len)) return candidates[k][1]
  }
  return FWD_NONE
}

/** Header names listed in `Connection` (lower-cased), excluding ones the gateway sets itself. */
function connectionListed (value: string | string[] | undefined): Set<string> | undefined {
  if (value === undefined) return undefined
  const text = Array.isArray(value) ? value.join(',') : value
  if (text.indexOf(',') === -1 && (text.length === 5 || text.length === 10)) {
    // `close` / `keep-alive`: the common cases list nothing worth tracking
    const t = text.toLowerCase()
    if (t === 'close' || t === 'keep-alive') return undefined
  }
  const out = new Set<string>()
  for (const part of text.split(',')) {
    const name = part.trim().toLowerCase()
    if (name !== '') out.add(name)
  }
  return out
}

export interface ForwardContext {
  /** The client's address as the socket sees it. */
  remoteAddress: string
  /** Whether that address is a trusted proxy (per trustProxy). */
  remoteTrusted: boolean
  /** The client's connection is TLS (the listener's `listen.tls`): X-Forwarded-Proto https. */
  secure?: boolean
  requestId: string
  /** W3C trace context: traceparent (the gateway's span as parent) and tracestate to send. */
  trace?: { traceparent: string, tracestate: string | undefined } | undefined
  /** Upstream `host[:port]`. */
  upstreamHost: string
  forwardAuthorization: boolean
  identity: { openid: string, unionid?: string | undefined, appid: string } | undefined
  /** The caller's app type (miniprogram, officialAccount, website, mobileApp) for X-WeGate-Channel. */
  channel?: string | undefined
  /** The caller's verified number for X-Phone-Number (`injectPhone` routes only). */
  phone?: string | undefined
}

/** Build the upstream request headers from the client's. */
export function upstreamRequestHeaders (incoming: IncomingHttpHeaders, ctx: ForwardContext): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const listed = connectionListed(incoming.connection)
  for (const name in incoming) {
    const value = incoming[name]
    if (value === undefined) continue
    // HTTP/2 pseudo-headers (:method, :path, :authority, :scheme) are not headers upstream.
    if (name.charCodeAt(0) === 0x3a /* : */) continue
    if (HOP_BY_HOP.has(name) || GATEWAY_SET.has(name) || isIdentityHeader(name)) continue
    const fwd = forwardingClass(name)
    // Underscore spellings are always the client's (proxies pass them untouched); FWD_SPELLING
    // names spelled with `-` are the real headers.
    if (fwd !== FWD_NONE && (fwd === FWD_ALWAYS || name.indexOf('_') !== -1 || (fwd === FWD_PROXY && !ctx.remoteTrusted))) continue
    if (name === 'authorization' && !ctx.forwardAuthorization) continue
    if (listed !== undefined && listed.has(name)) continue
    if (name === 'cookie') {
      // Node joins several Cookie lines with '; ' (HTTP/1.1 and HTTP/2 alike): a string here.
      const rest = withoutLoginCookie(Array.isArray(value) ? value.join('; ') : value)
      if (rest !== undefined) out.cookie = rest
      continue
    }
    out[name] = value
  }
  // HTTP/2 names the host in :authority (Host is allowed there too, and wins when both are sent).
  const originalHost = incoming.host ?? (incoming[':authority'] as string | undefined) ?? ''
  const proto = ctx.secure === true ? 'https' : 'http'
  const priorFor = incoming['x-forwarded-for']
  // Forwarding headers from the client are believed only when it is a trusted proxy
  // (its other X-Forwarded-* passed through above; nobody else's did).
  if (ctx.remoteTrusted) {
    out['x-forwarded-for'] = priorFor === undefined ? ctx.remoteAddress : `${Array.isArray(priorFor) ? priorFor.join(', ') : priorFor}, ${ctx.remoteAddress}`
    out['x-forwarded-proto'] = firstValue(incoming['x-forwarded-proto']) ?? proto
    out['x-forwarded-host'] = firstValue(incoming['x-forwarded-host']) ?? originalHost
  } else {
    out['x-forwarded-for'] = ctx.remoteAddress
    out['x-forwarded-proto'] = proto
    out['x-forwarded-host'] = originalHost
  }
  out.host = ctx.upstreamHost
  out['x-request-id'] = ctx.requestId
  const trace = ctx.trace
  if (trace !== undefined) {
    out.traceparent = trace.traceparent
    if (trace.tracestate !== undefined) out.tracestate = trace.tracestate
  }
  const id = ctx.identity
  if (id !== undefined) {
    out['x-openid'] = id.openid
    out['x-appid'] = id.appid
    if (id.unionid !== undefined) out['x-unionid'] = id.unionid
    if (ctx.channel !== undefined) out['x-wegate-channel'] = ctx.channel
  }
  if (ctx.phone !== undefined) out['x-phone-number'] = ctx.phone
  return out
}

/**
 * Copy upstream response headers for the client, minus hop-by-hop ones. The
 * forwarder then lays the gateway's own reply headers over them, so the upstream's
 * X-Request-Id never replaces the gateway's (the id its access line carries).
 */
export function clientResponseHeaders (incoming: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const listed = connectionListed(incoming.connection)
  for (const name in incoming) {
    const value = incoming[name]
    if (value === undefined || HOP_BY_HOP.has(name)) continue
    if (listed !== undefined && listed.has(name)) continue
    out[name] = value
  }
  const setCookie = out['set-cookie']
  if (setCookie !== undefined) {
    // undici hands Set-Cookie over as an array (one entry a cookie) or, once, as a string.
    const lines = (Array.isArray(setCookie) ? setCookie : [setCookie]).filter((line) => !setsLoginCookie(line))
    if (lines.length === 0) delete out['set-cookie']
    else out['set-cookie'] = lines
  }
  return out
}

function firstValue (v: string | string[] | undefined): string | undefined {
  if (v === undefined) return undefined
  const s = Array.isArray(v) ? v[0] : v
  const comma = s.indexOf(',')
  return (comma === -1 ? s : s.slice(0, comma)).trim()
}
