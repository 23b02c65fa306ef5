/**
 * /auth/login, /auth/refresh, /auth/logout and /.well-known/jwks.json: thin
 * handlers over the login coordinator (login.ts) and the sessions service
 * (sessions.ts). The mini program's side: wx.login → POST /auth/login {code} →
 * keep both tokens → send the access token as Bearer → on a 20004 (expired)
 * call /auth/refresh once and retry → on any other 2xxxx, log in again.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, ok } from '../errors.js'
import { normalisePath } from '../proxy/path.js'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'
import { pickApp } from './channels.js'
import { createLoginCoordinator, type LoginResult } from './login.js'
import { jwksSchema, loginSchema, logoutSchema, refreshSchema } from './schemas.js'
import { createSessions, pairOf } from './sessions.js'
import type { AuthSnapshot } from './snapshot.js'
import { registerWebLogin } from './web-login.js'
import { WeChatError, type WeChatApp } from './wechat.js'

export type { AuthSnapshot } from './snapshot.js'

export interface AuthOptions {
  snapshot: () => AuthSnapshot
  store: Store
  metrics: Metrics
  /** Clock (ms), for tests. */
  now?: () => number
  /** The /auth/login rate limiter (rateLimits.login). */
  loginLimiter?: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
}

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

/** The app a code login is for: the named one, or the only one it can be (channels.ts). */
function appOf (snap: AuthSnapshot, appId: string | undefined, metrics: Metrics): WeChatApp {
  try {
    return pickApp(snap.apps, appId, 'code')
  } catch (err) {
    metrics.logins.inc({ app: 'unknown', result: 'failure', errcode: 'none' })
    throw err
  }
}

export async function authPlugin (app: FastifyInstance, opts: AuthOptions): Promise<void> {
  const { snapshot, store, metrics } = opts
  const now = opts.now ?? Date.now
  const sessions = createSessions({ store, metrics, now })
  const coordinator = createLoginCoordinator({ claims: store, sessions, now })
  const web = registerWebLogin(app, { snapshot, store, metrics, sessions, now, loginLimiter: opts.loginLimiter })

  // JSON only: a form or text body is a 415, not a confusing validation error.
  app.removeContentTypeParser('text/plain')
  // Every route of this plugin (the plugin is encapsulated: proxied requests never run it).
  app.addHook('onRequest', exactSpelling)

  app.post<{ Body: { code?: string, appId?: string, ticket?: string, codeVerifier?: string } }>('/auth/login', {
    schema: loginSchema,
    // Before the body is read: a flood of logins costs one counter each.
    onRequest: opts.loginLimiter !== undefined ? [nameLogin, opts.loginLimiter] : [nameLogin]
  }, async (request, reply) => {
    const snap = snapshot()
    const { code, ticket } = request.body
    if (ticket !== undefined) {
      const issued = await web.redeemTicket(snap, { ticket, appId: request.body.appId, codeVerifier: request.body.codeVerifier }, request, reply)
      request.log.info({ appid: issued.appid, openid: issued.openid, fid: issued.fid, ticket: true }, 'login')
      return ok(pairOf(issued, now()))
    }
    if (code === undefined) throw new GatewayError('VALIDATION_FAILED')
    const wxApp = appOf(snap, request.body.appId, metrics)
    let result: LoginResult
    try {
      result = await coordinator.login(snap, wxApp, code, request.log)
    } catch (err) {
      // A login lost to the store (50010) is a failed login too: count it.
      const errcode = err instanceof WeChatError ? err.wechat.errcode : null
      metrics.logins.inc({ app: wxApp.appId, result: 'failure', errcode: errcode === null ? 'none' : String(errcode) })
      throw err
    }
    metrics.logins.inc({ app: wxApp.appId, result: 'success', errcode: '0' })
    request.log.info({ appid: wxApp.appId, openid: result.openid, fid: result.fid, shared: result.shared }, 'login')
    return ok(pairOf(result, now()))
  })

  app.post<{ Body: { refreshToken: string } }>('/auth/refresh', { schema: refreshSchema }, async (request) => {
    request.routeName = 'auth_refresh'
    const snap = snapshot()
    const issued = await sessions.refresh(snap.tokens, snap.config.tokens, request.body.refreshToken, [...snap.apps.keys()], request.log)
    return ok(pairOf(issued, now()))
  })

  app.post<{ Body: { refreshToken?: string, all?: boolean } | null | undefined }>('/auth/logout', { schema: logoutSchema }, async (request) => {
    request.routeName = 'auth_logout'
    const snap = snapshot()
    const claims = snap.guard.authenticate(request.headers.authorization, true)
    if (claims === undefined) throw new GatewayError('TOKEN_MISSING')
    const body = request.body ?? {}
    await sessions.logout(snap.tokens, snap.config.tokens, claims, { refreshToken: body.refreshToken, all: body.all === true })
    request.log.info({ appid: claims.appid, openid: claims.openid, all: body.all === true }, 'logout')
    return ok(null)
  })

  app.get('/.well-known/jwks.json', { schema: jwksSchema }, async (_request, reply) => {
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
