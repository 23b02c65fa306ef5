/**
 * /auth/login, /auth/refresh, /auth/logout and /.well-known/jwks.json.
 * The mini program's side: wx.login → POST /auth/login {code} → keep both
 * tokens → send the access token as Bearer → on a 20004 (expired) call
 * /auth/refresh once and retry → on any other 2xxxx, log in again.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, ok } from '../errors.js'
import { normalisePath } from '../proxy/path.js'
import type { GatewayConfig } from '../config/schema.js'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'
import type { Guard } from './guard.js'
import type { TokenService } from './tokens.js'
import { WeChatError, type WeChatApp, type WeChatClient, type WeChatSession } from './wechat.js'

/** What the auth routes read from the current config snapshot. */
export interface AuthSnapshot {
  readonly config: GatewayConfig
  readonly tokens: TokenService
  readonly guard: Guard
  readonly wechat: WeChatClient
  readonly apps: ReadonlyMap<string, WeChatApp>
}

export interface AuthOptions {
  snapshot: () => AuthSnapshot
  store: Store
  metrics: Metrics
  /** Clock (ms), for tests. */
  now?: () => number
  /** The /auth/login rate limiter (rateLimits.login). */
  loginLimiter?: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
}

interface TokenPair {
  accessToken: string
  tokenType: 'Bearer'
  expiresIn: number
  refreshToken: string
  refreshExpiresIn: number
  openid: string
  unionid?: string
}

const loginSchema = {
  body: {
    type: 'object',
    required: ['code'],
    properties: {
      // wx.login codes are 32 characters today; 128 leaves room without inviting abuse.
      code: { type: 'string', minLength: 1, maxLength: 128 },
      appId: { type: 'string', minLength: 1, maxLength: 64 }
    }
  }
} as const

const refreshSchema = {
  body: {
    type: 'object',
    required: ['refreshToken'],
    properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 256 } }
  }
} as const

const logoutSchema = {
  body: {
    type: ['object', 'null'],
    properties: {
      refreshToken: { type: 'string', minLength: 1, maxLength: 256 },
      all: { type: 'boolean' }
    }
  }
} as const

/**
 * The gateway's endpoints answer only at their exact spelling. Fastify's router
 * decodes `%61uth` to `auth` before matching, while `//auth/login` or
 * `/auth/./login` never match: one answer for every spelling means none of them
 * but the exact one is served (404, like any other path under /auth), and a path
 * the normaliser refuses (`/auth/login;x`) is the same 400 as anywhere else.
 */
async function exactSpelling (request: FastifyRequest): Promise<void> {
  const url = request.url
  const target = normalisePath(url)
  if (!target.ok) throw new GatewayError('BAD_PATH', { detail: `path rejected: ${target.reason}` })
  const n = target.path.length
  if (!url.startsWith(target.path) || (url.length !== n && url.charCodeAt(n) !== 0x3f /* ? */)) {
    throw new GatewayError('NO_ROUTE', { detail: `not the exact spelling of ${target.path}` })
  }
}

/** Named before the limiter runs, so a refused login is still counted under auth_login. */
async function nameLogin (request: FastifyRequest): Promise<void> {
  request.routeName = 'auth_login'
}

// Same-code logins within this window share one code2Session exchange (a client retrying a slow login).
// 10 s: long enough for a client retrying a lost answer, short enough that a code seen
// in transit is not a reusable credential for long.
const SAME_CODE_WINDOW_MS = 10_000
const SAME_CODE_MAX = 10_000

export async function authPlugin (app: FastifyInstance, opts: AuthOptions): Promise<void> {
  const { snapshot, store, metrics } = opts
  const now = opts.now ?? Date.now

  // JSON only: a form or text body is a 415, not a confusing validation error.
  app.removeContentTypeParser('text/plain')
  // Every route of this plugin (the plugin is encapsulated: proxied requests never run it).
  app.addHook('onRequest', exactSpelling)

  // In-flight and recently finished exchanges, keyed by app + code. WeChat codes are
  // single-use: without this, a retried login would fail with "code already used".
  const exchanges = new Map<string, { at: number, result: Promise<WeChatSession> }>()
  const exchange = (snap: AuthSnapshot, wxApp: WeChatApp, code: string): Promise<WeChatSession> => {
    const key = `${wxApp.appId}\u0000${code}`
    const t = now()
    const hit = exchanges.get(key)
    if (hit !== undefined && t - hit.at < SAME_CODE_WINDOW_MS) return hit.result
    if (exchanges.size >= SAME_CODE_MAX) {
      for (const [k, v] of exchanges) {
        if (t - v.at >= SAME_CODE_WINDOW_MS || exchanges.size >= SAME_CODE_MAX) exchanges.delete(k)
        else break
      }
    }
    const result = snap.wechat.code2Session(wxApp, code)
    exchanges.set(key, { at: t, result })
    // A failed exchange is shared with concurrent callers but not remembered:
    // a transient failure must not stick for the whole window.
    result.catch(() => { if (exchanges.get(key)?.result === result) exchanges.delete(key) })
    return result
  }

  const issue = async (snap: AuthSnapshot, who: { openid: string, unionid?: string | undefined, appid: string }, refresh: { token: string, expiresAt: number }, fid: string): Promise<TokenPair> => {
    const access = snap.tokens.signAccess({ openid: who.openid, unionid: who.unionid, appid: who.appid, fid })
    const pair: TokenPair = {
      accessToken: access.token,
      tokenType: 'Bearer',
      expiresIn: access.expiresIn,
      refreshToken: refresh.token,
      refreshExpiresIn: Math.max(0, Math.floor((refresh.expiresAt - now()) / 1000)),
      openid: who.openid
    }
    if (who.unionid !== undefined) pair.unionid = who.unionid
    return pair
  }

  app.post<{ Body: { code: string, appId?: string } }>('/auth/login', {
    schema: loginSchema,
    // Before the body is read: a flood of logins costs one counter each.
    onRequest: opts.loginLimiter !== undefined ? [nameLogin, opts.loginLimiter] : [nameLogin]
  }, async (request) => {
    const snap = snapshot()
    const { code, appId } = request.body
    let wxApp: WeChatApp | undefined
    if (appId !== undefined) {
      wxApp = snap.apps.get(appId)
      if (wxApp === undefined) {
        metrics.logins.inc({ app: 'unknown', result: 'failure', errcode: 'none' })
        throw new GatewayError('UNKNOWN_APP')
      }
    } else if (snap.apps.size === 1) {
      wxApp = snap.apps.values().next().value
    } else {
      metrics.logins.inc({ app: 'unknown', result: 'failure', errcode: 'none' })
      throw new GatewayError('UNKNOWN_APP', { message: 'appId is required: several mini programs are configured' })
    }
    if (wxApp === undefined) throw new GatewayError('UNKNOWN_APP')

    let session: WeChatSession
    try {
      session = await exchange(snap, wxApp, code)
    } catch (err) {
      const errcode = err instanceof WeChatError ? err.wechat.errcode : null
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: errcode === null ? 'none' : String(errcode) })
      throw err
    }

    const cfg = snap.config.tokens
    const t = now()
    const refresh = snap.tokens.newRefreshToken()
    const expiresAt = t + Math.min(cfg.refreshTtl, cfg.sessionTtl)
    try {
      await store.setSessionKey(wxApp.appId, session.openid, session.sessionKey, cfg.sessionKeyTtl)
      await store.createFamily(refresh.hash, {
        fid: refresh.fid,
        openid: session.openid,
        ...(session.unionid !== undefined ? { unionid: session.unionid } : {}),
        appid: wxApp.appId,
        expiresAt,
        familyExpiresAt: t + cfg.sessionTtl,
        createdAt: t
      })
    } catch (err) {
      // A login lost to the store (50010) is a failed login too: count it.
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: 'none' })
      throw err
    }
    metrics.logins.inc({ app: wxApp.appId, result: 'success', errcode: '0' })
    request.log.info({ appid: wxApp.appId, openid: session.openid, fid: refresh.fid }, 'login')
    return ok(await issue(snap, { openid: session.openid, unionid: session.unionid, appid: wxApp.appId }, { token: refresh.token, expiresAt }, refresh.fid))
  })

  app.post<{ Body: { refreshToken: string } }>('/auth/refresh', { schema: refreshSchema }, async (request) => {
    request.routeName = 'auth_refresh'
    const snap = snapshot()
    const presented = request.body.refreshToken
    const fid = snap.tokens.refreshFamily(presented)
    if (fid === null) {
      metrics.refreshes.inc({ result: 'invalid' })
      throw new GatewayError('REFRESH_INVALID')
    }
    const cfg = snap.config.tokens
    const next = snap.tokens.newRefreshToken(fid)
    const result = await store.rotateRefresh({
      fid,
      hash: snap.tokens.hashRefresh(presented),
      nextHash: next.hash,
      grace: snap.tokens.sealGrace(presented, next.token),
      nowMs: now(),
      refreshTtlMs: cfg.refreshTtl,
      graceMs: cfg.refreshGrace,
      denyMs: cfg.accessTtl + cfg.clockSkew
    })
    switch (result.status) {
      case 'rotated':
        metrics.refreshes.inc({ result: 'rotated' })
        return ok(await issue(snap, result.record, { token: next.token, expiresAt: result.record.expiresAt }, fid))
      case 'grace': {
        // The same child as the first answer: a client that retried gets a working pair.
        const child = snap.tokens.openGrace(presented, result.grace)
        if (child === null) {
          metrics.refreshes.inc({ result: 'invalid' })
          throw new GatewayError('REFRESH_INVALID')
        }
        metrics.refreshes.inc({ result: 'grace' })
        return ok(await issue(snap, result.record, { token: child, expiresAt: result.record.expiresAt }, fid))
      }
      case 'reused':
        metrics.refreshes.inc({ result: 'reused' })
        metrics.revocations.inc({ kind: 'family' })
        request.log.warn({ fid: result.fid }, 'refresh token reused after its grace window: session family revoked')
        throw new GatewayError('REFRESH_REUSED')
      case 'expired':
        metrics.refreshes.inc({ result: 'expired' })
        throw new GatewayError('REFRESH_EXPIRED')
      default:
        metrics.refreshes.inc({ result: 'invalid' })
        throw new GatewayError('REFRESH_INVALID')
    }
  })

  app.post<{ Body: { refreshToken?: string, all?: boolean } | null | undefined }>('/auth/logout', { schema: logoutSchema }, async (request) => {
    request.routeName = 'auth_logout'
    const snap = snapshot()
    const claims = snap.guard.authenticate(request.headers.authorization, true)
    if (claims === undefined) throw new GatewayError('TOKEN_MISSING')
    const cfg = snap.config.tokens
    const t = now()
    await store.revokeAccessToken(claims.jti, claims.exp * 1000 + cfg.clockSkew)
    metrics.revocations.inc({ kind: 'token' })
    // The family outlives any access token minted from it by at most accessTtl + skew.
    const familyDeny = t + cfg.accessTtl + cfg.clockSkew
    await store.revokeFamily(claims.fid, familyDeny)
    metrics.revocations.inc({ kind: 'family' })
    const body = request.body ?? {}
    if (body.refreshToken !== undefined) {
      const other = snap.tokens.refreshFamily(body.refreshToken)
      if (other !== null && other !== claims.fid) {
        // The family id is no proof (it is in every access token): only a token the
        // caller really holds may end its family. Spending it is the check — it dies
        // with the family anyway; a made-up secret is 'invalid' and changes nothing.
        const held = await store.rotateRefresh({
          fid: other,
          hash: snap.tokens.hashRefresh(body.refreshToken),
          nextHash: snap.tokens.newRefreshToken(other).hash,
          grace: '',
          nowMs: t,
          refreshTtlMs: cfg.refreshTtl,
          graceMs: 0,
          denyMs: cfg.accessTtl + cfg.clockSkew
        })
        if (held.status === 'rotated' || held.status === 'grace' || held.status === 'expired') {
          await store.revokeFamily(other, familyDeny)
          metrics.revocations.inc({ kind: 'family' })
        } else if (held.status === 'reused') {
          metrics.revocations.inc({ kind: 'family' }) // the store revoked it (reuse detection)
        }
      }
    }
    if (body.all === true) {
      await store.revokeUserBefore(claims.appid, claims.openid, t, t + cfg.sessionTtl)
      metrics.revocations.inc({ kind: 'user' })
    }
    request.log.info({ appid: claims.appid, openid: claims.openid, all: body.all === true }, 'logout')
    return ok(null)
  })

  app.get('/.well-known/jwks.json', async (_request, reply) => {
    const jwks = snapshot().tokens.jwks()
    if (jwks === null) throw new GatewayError('NO_ROUTE', { message: 'No JWKS: tokens are signed with a shared secret (HS256)' })
    reply.header('cache-control', 'public, max-age=300')
    return jwks
  })

  // A known gateway path with the wrong method is a 405, not a 404. Every other
  // /auth… and /.well-known… path reaches the proxy, whose route table refuses
  // it (NO_ROUTE): a root route never receives them.
  app.route({
    method: ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/auth/:action',
    handler: async (request) => {
      const { action } = request.params as { action: string }
      throw new GatewayError(['login', 'refresh', 'logout'].includes(action) ? 'METHOD_NOT_ALLOWED' : 'NO_ROUTE')
    }
  })
  app.route({
    method: ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    url: '/.well-known/jwks.json',
    handler: async () => { throw new GatewayError('METHOD_NOT_ALLOWED') }
  })
}
