/**
 * /auth/login, /auth/refresh, /auth/logout and /.well-known/jwks.json.
 * The mini program's side: wx.login → POST /auth/login {code} → keep both
 * tokens → send the access token as Bearer → on a 20004 (expired) call
 * /auth/refresh once and retry → on any other 2xxxx, log in again.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, ok, type ErrorName } from '../errors.js'
import { normalisePath } from '../proxy/path.js'
import type { GatewayConfig } from '../config/schema.js'
import type { Metrics } from '../metrics/index.js'
import type { LoginState, Store } from '../store/index.js'
import type { Guard } from './guard.js'
import type { TokenService } from './tokens.js'
import { WeChatError, type WeChatApp, type WeChatClient, type WeChatFailureKind, type WeChatSession } from './wechat.js'

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

// Same-code logins share one outcome (a client retrying a slow or lost login: WeChat codes
// are single-use). 10 s after the answer: long enough for a client retrying a lost answer,
// short enough that a code seen in transit is not a reusable credential for long.
const SAME_CODE_WINDOW_MS = 10_000
// A claim outlives the slowest exchange (retries included) by this much: room for the store writes.
const CLAIM_SLACK_MS = 2_000
// Bound on the per-instance maps below.
const SAME_CODE_MAX = 10_000
// A login waiting on another instance's claim looks again after 20 ms, doubling up to 200 ms.
const POLL_FIRST_MS = 20
const POLL_MAX_MS = 200

/** A login's answer as the other logins with the same code get it (times in epoch ms). */
interface LoginResult {
  accessToken: string
  /** The access token's lifetime (s) when issued, at `issuedAt` (ms). */
  expiresIn: number
  issuedAt: number
  refreshToken: string
  refreshExpiresAt: number
  openid: string
  unionid?: string
  fid: string
  /** True when this answer was another login's (same code), not this login's own exchange. */
  shared: boolean
}

/** What the store keeps (sealed with the code) for the other logins with the same code. */
type SharedOutcome =
  | { ok: Omit<LoginResult, 'shared'> }
  | { err: { name: ErrorName, kind: WeChatFailureKind, errcode: number | null, headers?: Record<string, string> } }

/** WeChat errors that a second try with the same code cannot change: they are remembered like a success. */
function definitive (err: WeChatError): boolean {
  return err.wechat.kind === 'errcode' && err.wechat.errcode !== -1 && err.wechat.errcode !== 45011
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export async function authPlugin (app: FastifyInstance, opts: AuthOptions): Promise<void> {
  const { snapshot, store, metrics } = opts
  const now = opts.now ?? Date.now

  // JSON only: a form or text body is a 415, not a confusing validation error.
  app.removeContentTypeParser('text/plain')
  // Every route of this plugin (the plugin is encapsulated: proxied requests never run it).
  app.addHook('onRequest', exactSpelling)

  /** Drop expired entries (insertion order = age) and keep the map bounded. */
  const trim = <V extends { at: number }>(map: Map<string, V>, t: number, ttl: number): void => {
    for (const [k, v] of map) {
      if (t - v.at >= ttl || map.size >= SAME_CODE_MAX) map.delete(k)
      else break
    }
  }

  // Logins in flight on this instance, by login key: same-code logins here share one promise.
  const inflight = new Map<string, Promise<LoginResult>>()
  // WeChat sessions this instance obtained whose login then failed on the store (50010): a retry
  // here finishes the login without calling WeChat again (the code is spent there). Kept in
  // memory only, with the claim's owner id so the retry can take the claim back.
  const exchanged = new Map<string, { at: number, owner: string, session: WeChatSession }>()

  /**
   * Log in with a code, once per code across every instance sharing the store: claim the
   * code, or wait for the login that holds the claim and take its outcome.
   */
  const loginWith = async (snap: AuthSnapshot, wxApp: WeChatApp, code: string, key: string, log: FastifyBaseLogger): Promise<LoginResult> => {
    const claimTtl = Math.max(SAME_CODE_WINDOW_MS, snap.wechat.budgetMs + CLAIM_SLACK_MS)
    const t0 = now()
    trim(exchanged, t0, claimTtl)
    const owner = exchanged.get(key)?.owner ?? randomBytes(12).toString('base64url')
    // The claim expires with a holder that died: past that, waiting cannot help.
    const deadline = t0 + claimTtl + POLL_MAX_MS
    let state: LoginState = await store.claimLogin(key, owner, claimTtl)
    let pause = POLL_FIRST_MS
    for (;;) {
      switch (state.status) {
        case 'claimed':
          return await exchangeAndIssue(snap, wxApp, code, key, owner, log)
        case 'done':
        case 'failed':
          return openOutcome(snap, wxApp, code, state.outcome)
        case 'none':
          state = await store.claimLogin(key, owner, claimTtl)
          continue
        case 'pending':
          if (now() >= deadline) {
            throw new WeChatError('WECHAT_TIMEOUT', { kind: 'timeout', errcode: null, attempts: 0 }, {
              detail: `another login with this code did not finish within ${claimTtl} ms`
            })
          }
          await sleep(pause)
          pause = Math.min(POLL_MAX_MS, pause * 2)
          state = await store.peekLogin(key)
      }
    }
  }

  /** Holder of the claim: exchange the code, start the session, store the outcome for the others. */
  const exchangeAndIssue = async (snap: AuthSnapshot, wxApp: WeChatApp, code: string, key: string, owner: string, log: FastifyBaseLogger): Promise<LoginResult> => {
    const finish = async (outcome: SharedOutcome, remember: boolean): Promise<void> => {
      try {
        const kept = await store.finishLogin(key, owner, snap.tokens.sealLogin(wxApp.appId, code, JSON.stringify(outcome)), remember, SAME_CODE_WINDOW_MS)
        if (!kept) log.warn({ appid: wxApp.appId }, 'login claim expired before the login finished: a retry with this code may get 10002')
      } catch (err) {
        // This login's answer stands; a retry with the same code on another instance may get 10002.
        log.warn({ appid: wxApp.appId, err: err instanceof GatewayError ? err.detail : String(err) }, 'could not share the login outcome through the store')
      }
    }

    let session: WeChatSession
    const known = exchanged.get(key)
    if (known !== undefined) {
      session = known.session
    } else {
      try {
        session = await snap.wechat.code2Session(wxApp, code)
      } catch (err) {
        if (err instanceof WeChatError) {
          const e: SharedOutcome = { err: { name: err.errorName, kind: err.wechat.kind, errcode: err.wechat.errcode } }
          if (err.headers !== undefined) e.err.headers = err.headers
          await finish(e, definitive(err))
        } else {
          await store.releaseLogin(key, owner).catch(() => {})
        }
        throw err
      }
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
      // The claim stays (the store is likely down anyway): a retry here takes it back and
      // uses WeChat's answer kept in memory, since WeChat would now say "code already used".
      if (!exchanged.has(key)) exchanged.set(key, { at: t, owner, session })
      throw err
    }
    exchanged.delete(key)
    const access = snap.tokens.signAccess({ openid: session.openid, unionid: session.unionid, appid: wxApp.appId, fid: refresh.fid })
    const result: Omit<LoginResult, 'shared'> = {
      accessToken: access.token,
      expiresIn: access.expiresIn,
      issuedAt: now(),
      refreshToken: refresh.token,
      refreshExpiresAt: expiresAt,
      openid: session.openid,
      fid: refresh.fid
    }
    if (session.unionid !== undefined) result.unionid = session.unionid
    await finish({ ok: result }, true)
    return { ...result, shared: false }
  }

  /** Another login's outcome: the same token pair, or the same error. */
  const openOutcome = (snap: AuthSnapshot, wxApp: WeChatApp, code: string, sealed: string): LoginResult => {
    const text = snap.tokens.openLogin(wxApp.appId, code, sealed)
    let outcome: SharedOutcome | undefined
    try { outcome = text === null ? undefined : JSON.parse(text) as SharedOutcome } catch {}
    if (outcome === undefined) throw new GatewayError('INTERNAL', { detail: 'a stored login outcome did not open with its code' })
    if ('ok' in outcome) return { ...outcome.ok, shared: true }
    const e = outcome.err
    throw new WeChatError(e.name, { kind: e.kind, errcode: e.errcode, attempts: 0 }, {
      detail: 'the outcome of another login with the same code',
      ...(e.headers !== undefined ? { headers: e.headers } : {})
    })
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

    // One outcome per code, shared by every login presenting it (here or on another instance).
    const key = snap.tokens.loginKey(wxApp.appId, code)
    let result: LoginResult
    try {
      let running = inflight.get(key)
      const joined = running !== undefined
      if (running === undefined) {
        running = loginWith(snap, wxApp, code, key, request.log)
        inflight.set(key, running)
        const mine = running
        mine.then(() => {}, () => {}).finally(() => { if (inflight.get(key) === mine) inflight.delete(key) })
      }
      result = await running
      if (joined) result = { ...result, shared: true }
    } catch (err) {
      // A login lost to the store (50010) is a failed login too: count it.
      const errcode = err instanceof WeChatError ? err.wechat.errcode : null
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: errcode === null ? 'none' : String(errcode) })
      throw err
    }
    metrics.logins.inc({ app: wxApp.appId, result: 'success', errcode: '0' })
    request.log.info({ appid: wxApp.appId, openid: result.openid, fid: result.fid, shared: result.shared }, 'login')
    const t = now()
    const pair: TokenPair = {
      accessToken: result.accessToken,
      tokenType: 'Bearer',
      // the full accessTtl in the first answer; what remains of it in a shared one
      expiresIn: Math.max(0, result.expiresIn - Math.floor((t - result.issuedAt) / 1000)),
      refreshToken: result.refreshToken,
      refreshExpiresIn: Math.max(0, Math.floor((result.refreshExpiresAt - t) / 1000)),
      openid: result.openid
    }
    if (result.unionid !== undefined) pair.unionid = result.unionid
    return ok(pair)
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
      denyMs: cfg.accessTtl + cfg.clockSkew,
      appids: [...snap.apps.keys()]
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
      case 'foreign':
        metrics.refreshes.inc({ result: 'invalid' })
        throw new GatewayError('SESSION_APP_UNKNOWN', { detail: `appid ${result.appid} is not in wechat.apps` })
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
          denyMs: cfg.accessTtl + cfg.clockSkew,
          appids: [...snap.apps.keys()]
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
    if (jwks === null) throw new GatewayError('NO_JWKS')
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
