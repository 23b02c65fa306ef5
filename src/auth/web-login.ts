/**
 * Browser logins for officialAccount (H5 inside WeChat) and website (QR) apps:
 *
 *   GET /auth/wechat/authorize?appId&redirect[&scope]  → 302 to WeChat's page, with a state
 *   GET /auth/wechat/callback?code&state               → 302 to `redirect` with a one-time ticket
 *   POST /auth/login {ticket}                          → the usual token pair (redeemTicket)
 *
 * `redirect` must start with one of the app's `redirects` at a path boundary
 * (never an open redirect). The state is 256 random bits, kept in the store under
 * its hash for 10 minutes, taken once, and bound to the browser that started the
 * login by an HttpOnly `__Host-` cookie holding another secret, new at every
 * authorize (the prefix keeps sibling subdomains and plain-http responses from
 * planting it; the proxy strips it from what goes upstream). The ticket is 256 random bits too, kept under its hash for 60 s,
 * taken once, bound to the app and to the browser, as the app's `loginBinding`
 * says: to the same cookie (default: the page posts the ticket with it), or to the
 * `codeVerifier` only the page holds whose `codeChallenge` (S256, as in PKCE)
 * started the login — for a page on another origin, which the cookie does not
 * reach. One way per app: a page cannot be made to accept the other kind of
 * ticket (docs/channels.md). Digests are compared in constant time.
 * The ticket carries no token: tokens never travel in a URL. WeChat's
 * access_token and refresh_token stay in the store, like session_key.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError } from '../errors.js'
import { cookieName, LOGIN_COOKIE } from '../proxy/headers.js'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'
import { pickApp } from './channels.js'
import { authorizeSchema, callbackSchema } from './schemas.js'
import type { IssuedPair, Sessions } from './sessions.js'
import type { AuthSnapshot } from './snapshot.js'
import { WeChatError, type WeChatApp } from './wechat.js'

const STATE_TTL_MS = 10 * 60_000
const TICKET_TTL_MS = 60_000
const COOKIE = LOGIN_COOKIE
// `__Host-` requires Path=/, Secure and no Domain. The callback and the exchange read it; the
// proxy removes it from the Cookie header it forwards (proxy/headers.ts), so no backend sees it.
const COOKIE_ATTRIBUTES = 'Path=/; HttpOnly; Secure; SameSite=Lax'
/** A secret as this module makes them (32 random bytes, base64url); also the shape of an S256 code challenge. */
const SECRET = /^[A-Za-z0-9_-]{43}$/

/**
 * `browser`: digest of the login cookie; `challenge`: the page's S256 code challenge, when it sent one.
 * A ticket with a challenge is bound to its verifier, one without to the cookie.
 */
interface StateRecord { appid: string, redirect: string, browser: string, challenge?: string, expiresAt: number }
interface TicketRecord { appid: string, openid: string, unionid?: string, browser: string, challenge?: string, expiresAt: number }

const newSecret = (): string => randomBytes(32).toString('base64url')
const digest = (s: string): string => createHash('sha256').update(s).digest('base64url')

export interface WebLoginOptions {
  snapshot: () => AuthSnapshot
  store: Store
  metrics: Metrics
  sessions: Sessions
  now: () => number
  /** The /auth/login rate limiter: starting a browser login counts as a login. */
  loginLimiter?: ((request: FastifyRequest, reply: FastifyReply) => Promise<void>) | undefined
}

/** What POST /auth/login {ticket} carries. */
export interface TicketBody { ticket: string, appId?: string | undefined, codeVerifier?: string | undefined }

export interface WebLogin {
  /**
   * POST /auth/login {ticket[, appId][, codeVerifier]}: the ticket's login, once, for the
   * browser it was issued to (login cookie or code verifier); clears the login cookie.
   */
  redeemTicket (snap: AuthSnapshot, body: TicketBody, request: FastifyRequest, reply: FastifyReply): Promise<IssuedPair & { fid: string, appid: string }>
}

/**
 * `href` (normalised) is under `prefix` (normalised): it starts with it and, unless the
 * prefix ends in `/`, the next character ends a path segment — `…/app` admits `…/app`,
 * `…/app/x`, `…/app?x`, `…/app#x`, never `…/apple` or `…/app.evil`.
 */
export function underPrefix (href: string, prefix: string): boolean {
  if (!href.startsWith(prefix)) return false
  if (href.length === prefix.length || prefix.endsWith('/')) return true
  const next = href[prefix.length]
  return next === '/' || next === '?' || next === '#'
}

// Percent-encoded slash, backslash or dot in a path: a server that decodes before routing may see another path.
const ENCODED_SEPARATOR = /%(2f|5c|2e)/i

/** The allowed URL `redirect` is, normalised; REDIRECT_NOT_ALLOWED otherwise. */
export function allowedRedirect (app: WeChatApp, redirect: string): string {
  let url: URL
  try {
    url = new URL(redirect)
  } catch {
    throw new GatewayError('REDIRECT_NOT_ALLOWED', { detail: 'not an absolute URL' })
  }
  const href = url.href
  const ok = (url.protocol === 'https:' || url.protocol === 'http:') && url.username === '' && url.password === '' &&
    !ENCODED_SEPARATOR.test(url.pathname) &&
    (app.redirects ?? []).some((prefix) => underPrefix(href, new URL(prefix).href))
  if (!ok) throw new GatewayError('REDIRECT_NOT_ALLOWED', { detail: `redirect ${url.origin}${url.pathname} matches no prefix of app ${app.appId}` })
  return href
}

/** The scope WeChat is asked for: snsapi_login for a website; snsapi_userinfo (default) or snsapi_base in WeChat. */
function scopeOf (app: WeChatApp, scope: string | undefined): string {
  if (app.type === 'website') {
    if (scope !== undefined && scope !== 'snsapi_login') throw new GatewayError('VALIDATION_FAILED', { message: 'scope: a website app logs in with snsapi_login only' })
    return 'snsapi_login'
  }
  if (scope === undefined) return 'snsapi_userinfo'
  if (scope !== 'snsapi_base' && scope !== 'snsapi_userinfo') throw new GatewayError('VALIDATION_FAILED', { message: 'scope: snsapi_base or snsapi_userinfo' })
  return scope
}

/** The page's code challenge, required or refused as the app's loginBinding says. */
function challengeOf (app: WeChatApp, challenge: string | undefined): string | undefined {
  const byChallenge = app.loginBinding === 'codeChallenge'
  if (byChallenge && challenge === undefined) {
    throw new GatewayError('VALIDATION_FAILED', { message: `codeChallenge: required by app ${app.appId} (loginBinding: codeChallenge)` })
  }
  if (!byChallenge && challenge !== undefined) {
    throw new GatewayError('VALIDATION_FAILED', { message: `codeChallenge: app ${app.appId} binds its logins to the login cookie (loginBinding: cookie)` })
  }
  return challenge
}

/**
 * The login cookie's value, when the browser sent one this module could have set;
 * 'conflict' when it sent two different ones — one of them set for the parent domain
 * by another site (cookie tossing): neither can be trusted to be this browser's.
 */
function browserSecret (request: FastifyRequest): string | undefined | 'conflict' {
  let found: string | undefined
  for (const part of (request.headers.cookie ?? '').split(';')) {
    if (cookieName(part) === COOKIE) {
      const v = part.slice(part.indexOf('=') + 1).trim()
      if (!SECRET.test(v)) continue
      if (found !== undefined && found !== v) return 'conflict'
      found = v
    }
  }
  return found
}

function sameDigest (a: string, b: string): boolean {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

function parse<T> (raw: string | null): T | null {
  if (raw === null) return null
  try {
    return JSON.parse(raw) as T
  } catch {
    return null
  }
}

/** A 302 that no cache keeps and whose target learns nothing from a Referer. */
function redirectTo (reply: FastifyReply, url: string): FastifyReply {
  return reply.header('cache-control', 'no-store').header('referrer-policy', 'no-referrer').redirect(url, 302)
}

const stateInvalid = (detail: string) => new GatewayError('LOGIN_STATE_INVALID', { detail })
const ticketInvalid = (detail: string) => new GatewayError('LOGIN_TICKET_INVALID', { detail })
const otherBrowser = (detail: string) => new GatewayError('LOGIN_TICKET_OTHER_BROWSER', { detail })

type AuthorizeRequest = FastifyRequest<{ Querystring: { appId?: string, redirect: string, scope?: string, codeChallenge?: string } }>
type CallbackRequest = FastifyRequest<{ Querystring: { code?: string, state?: string } }>

/** GET /auth/wechat/authorize: check the redirect, keep a state for this browser, send it to WeChat. */
function authorize (opts: WebLoginOptions) {
  return async (request: AuthorizeRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const snap = opts.snapshot()
    const wxApp = pickApp(snap.apps, request.query.appId, 'redirect')
    const redirect = allowedRedirect(wxApp, request.query.redirect)
    const scope = scopeOf(wxApp, request.query.scope)
    const challenge = challengeOf(wxApp, request.query.codeChallenge)
    // A new browser secret at every start, never the one the browser sent: that one may have
    // been planted by a sibling site (docs/channels.md); a login of another tab started before
    // this one must start again.
    const browser = newSecret()
    const state = newSecret()
    const record: StateRecord = { appid: wxApp.appId, redirect, browser: digest(browser), expiresAt: opts.now() + STATE_TTL_MS }
    if (challenge !== undefined) record.challenge = challenge
    await opts.store.putOnce('state', digest(state), JSON.stringify(record), STATE_TTL_MS)
    const callback = `${(snap.config.publicUrl ?? '').replace(/\/+$/, '')}/auth/wechat/callback`
    const page = wxApp.type === 'website' ? '/connect/qrconnect' : '/connect/oauth2/authorize'
    // WeChat wants the parameters in this order, and the fragment.
    const target = `${snap.config.wechat.openBaseUrl.replace(/\/+$/, '')}${page}?appid=${encodeURIComponent(wxApp.appId)}` +
      `&redirect_uri=${encodeURIComponent(callback)}&response_type=code&scope=${scope}&state=${state}#wechat_redirect`
    reply.header('set-cookie', `${COOKIE}=${browser}; Max-Age=${STATE_TTL_MS / 1000}; ${COOKIE_ATTRIBUTES}`)
    return redirectTo(reply, target)
  }
}

/** Take the callback's state (spent by its first use, whatever follows) and check it belongs to this browser. */
async function takeState (opts: WebLoginOptions, request: CallbackRequest): Promise<StateRecord> {
  const state = request.query.state
  if (state === undefined || !SECRET.test(state)) throw stateInvalid('no state, or not one the gateway issued')
  const record = parse<StateRecord>(await opts.store.takeOnce('state', digest(state)))
  if (record === null) throw stateInvalid('state unknown, already used or past its store TTL')
  if (record.expiresAt <= opts.now()) throw stateInvalid('state older than 10 minutes')
  const browser = browserSecret(request)
  if (browser === undefined) throw stateInvalid('no login cookie: the state was issued to another browser, or the cookie was blocked')
  if (browser === 'conflict') throw stateInvalid('two different login cookies (one set for the parent domain by another site?)')
  if (!sameDigest(digest(browser), record.browser)) throw stateInvalid('state issued to another browser (login cookie different)')
  return record
}

/** GET /auth/wechat/callback: exchange WeChat's code, back to the page with a ticket (or why not). */
function callback (opts: WebLoginOptions) {
  const { store, metrics, now } = opts
  return async (request: CallbackRequest, reply: FastifyReply): Promise<FastifyReply> => {
    const record = await takeState(opts, request)
    const snap = opts.snapshot()
    const wxApp = snap.apps.get(record.appid)
    if (wxApp === undefined) throw new GatewayError('UNKNOWN_APP', { detail: `app ${record.appid} is no longer configured` })
    const back = new URL(allowedRedirect(wxApp, record.redirect))
    // The outcome is the gateway's to say: a ticket or error already in the redirect was put there by whoever wrote the link.
    for (const name of ['ticket', 'error', 'errorCode']) back.searchParams.delete(name)
    const code = request.query.code
    if (code === undefined || code === '') {
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: 'none' })
      request.log.info({ appid: wxApp.appId }, 'browser login refused by the user')
      back.searchParams.set('error', 'access_denied')
      return redirectTo(reply, back.href)
    }
    try {
      const session = await snap.wechat.oauth2Session(wxApp, code)
      if (session.grant !== undefined) await store.setWeChatGrant(wxApp.appId, session.openid, session.grant, snap.config.tokens.sessionKeyTtl)
      const ticket = newSecret()
      // The ticket inherits the state's binding: the cookie just checked, or the page's code challenge.
      const t: TicketRecord = { appid: wxApp.appId, openid: session.openid, browser: record.browser, expiresAt: now() + TICKET_TTL_MS }
      if (session.unionid !== undefined) t.unionid = session.unionid
      if (record.challenge !== undefined) t.challenge = record.challenge
      await store.putOnce('ticket', digest(ticket), JSON.stringify(t), TICKET_TTL_MS)
      metrics.logins.inc({ app: wxApp.appId, result: 'success', errcode: '0' })
      request.log.info({ appid: wxApp.appId, openid: session.openid }, 'browser login: ticket issued')
      back.searchParams.set('ticket', ticket)
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err
      const errcode = err instanceof WeChatError ? err.wechat.errcode : null
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: errcode === null ? 'none' : String(errcode) })
      request.log.warn({ appid: wxApp.appId, code: err.code, detail: err.detail }, 'browser login failed')
      back.searchParams.set('error', 'login_failed')
      back.searchParams.set('errorCode', String(err.code))
    }
    return redirectTo(reply, back.href)
  }
}

/** Register the two browser endpoints; the ticket is redeemed by POST /auth/login (routes.ts). */
export function registerWebLogin (app: FastifyInstance, opts: WebLoginOptions): WebLogin {
  const named = (name: string) => opts.loginLimiter !== undefined ? [nameRoute(name), opts.loginLimiter] : [nameRoute(name)]
  app.get<{ Querystring: AuthorizeRequest['query'] }>('/auth/wechat/authorize', { schema: authorizeSchema, onRequest: named('auth_wechat_authorize') }, authorize(opts))
  app.get<{ Querystring: CallbackRequest['query'] }>('/auth/wechat/callback', { schema: callbackSchema, onRequest: nameRoute('auth_wechat_callback') }, callback(opts))
  // A known browser-login path with the wrong method is a 405, like /auth/login's.
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/auth/wechat/:action',
    handler: async (request) => {
      const { action } = request.params as { action: string }
      throw new GatewayError(action === 'authorize' || action === 'callback' ? 'METHOD_NOT_ALLOWED' : 'NO_ROUTE')
    }
  })
  return {
    async redeemTicket (snap, { ticket, appId, codeVerifier }, request, reply) {
      // Taken (spent) before any check: a refused ticket is gone too, so a ticket link
      // tried in another browser can be tried nowhere else.
      const record = SECRET.test(ticket) ? parse<TicketRecord>(await opts.store.takeOnce('ticket', digest(ticket))) : null
      if (record === null) throw ticketInvalid('ticket unknown, already used or past its store TTL')
      if (record.expiresAt <= opts.now()) throw ticketInvalid('ticket older than 60 s')
      if (appId !== undefined && appId !== record.appid) throw ticketInvalid(`ticket issued for app ${record.appid}, presented for ${appId}`)
      const cookie = browserSecret(request)
      const refused = bindingProblem(record, cookie, codeVerifier)
      if (refused !== undefined) {
        request.log.warn({ appid: record.appid, reason: refused }, 'browser login: ticket presented by another browser, refused and spent')
        throw otherBrowser(refused)
      }
      if (!snap.apps.has(record.appid)) throw new GatewayError('SESSION_APP_UNKNOWN')
      const who = { appid: record.appid, openid: record.openid, unionid: record.unionid }
      const issued = await opts.sessions.start(snap.tokens, snap.config.tokens, who, {})
      // The login is done: the cookie has nothing left to bind (a login started later sets a new one).
      if (cookie !== undefined) reply.header('set-cookie', `${COOKIE}=; Max-Age=0; ${COOKIE_ATTRIBUTES}`)
      return { ...issued, appid: record.appid }
    }
  }
}

/**
 * Why a ticket may not be redeemed by this request, or undefined when it may: a ticket
 * whose login sent a code challenge needs its verifier (the cookie is not asked: the page
 * may be on another origin); any other needs the login cookie of the browser that started
 * it, and no verifier (a page that sends one expects a ticket bound to it: anything else
 * came from a login it did not start).
 */
function bindingProblem (record: TicketRecord, cookie: string | undefined | 'conflict', verifier: string | undefined): string | undefined {
  if (record.challenge !== undefined) {
    if (verifier === undefined) return 'codeVerifier missing: the login was started with a codeChallenge'
    return sameDigest(digest(verifier), record.challenge) ? undefined : 'codeVerifier does not match the codeChallenge'
  }
  if (verifier !== undefined) return 'codeVerifier sent, but the login was started without a codeChallenge'
  if (cookie === undefined) return 'login cookie missing (another browser, or a cross-origin request without credentials)'
  if (cookie === 'conflict') return 'two different login cookies (one set for the parent domain by another site?)'
  return sameDigest(digest(cookie), record.browser) ? undefined : 'login cookie of another browser'
}

/** Name the request for metrics and logs before the limiter runs (a refused request is still counted under it). */
function nameRoute (name: string) {
  return async (request: FastifyRequest): Promise<void> => {
    request.routeName = name
  }
}
