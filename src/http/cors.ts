/**
 * CORS for browser pages on other origins (H5 pages, websites): `cors` in
 * gateway.yaml, replaced per route by `routes[].cors` (a policy, or false for
 * none). Where a policy applies:
 * - a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered
 *   here, in the first onRequest hooks: 204, never forwarded, before any token
 *   check or rate limit, counted under the route it is for;
 * - every response gets `Vary: Origin`; one to an allowed origin gets
 *   Access-Control-Allow-Origin (the origin), -Allow-Credentials and -Expose-Headers;
 *   a disallowed origin gets no CORS headers at all (the same answer otherwise);
 * - an upstream's own Access-Control-* headers are dropped (proxy/forward.ts reads
 *   `request.corsApplied`): the gateway's policy is the only one the browser sees.
 * Without any policy the hook costs one WeakMap lookup per request.
 *
 * Hand-written rather than @fastify/cors: the policy depends on the proxy's own
 * longest-prefix route table and on the snapshot (reloads), @fastify/cors registers an
 * `OPTIONS *` route that collides with the proxy's catch-all and the /auth 405 routes,
 * and it cannot drop an upstream's headers from a hijacked, streamed response.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { CorsConfig, GatewayConfig, RouteConfig } from '../config/schema.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** A CORS policy applies to this request: the upstream's Access-Control-* headers are dropped. */
    corsApplied: boolean
  }
}

interface Policy {
  /** undefined: any origin (`*`, no credentials). */
  origins: Set<string> | undefined
  /** Headers of an allowed actual response, besides Access-Control-Allow-Origin. */
  response: Record<string, string>
  /** Headers of an allowed preflight answer, besides Access-Control-Allow-Origin. */
  preflight: Record<string, string>
}

interface Compiled {
  top: Policy | undefined
  /** Per route name: its own policy, or null for `cors: false`; absent: the top-level one. */
  routes: Map<string, Policy | null>
  any: boolean
}

function compile (c: CorsConfig): Policy {
  const response: Record<string, string> = {}
  if (c.credentials) response['access-control-allow-credentials'] = 'true'
  if (c.exposeHeaders.length > 0) response['access-control-expose-headers'] = c.exposeHeaders.join(', ')
  const preflight: Record<string, string> = {
    'access-control-allow-methods': c.methods.join(', '),
    'access-control-max-age': String(Math.floor(c.maxAge / 1000))
  }
  if (c.headers.length > 0) preflight['access-control-allow-headers'] = c.headers.join(', ')
  if (c.credentials) preflight['access-control-allow-credentials'] = 'true'
  return { origins: c.origins.includes('*') ? undefined : new Set(c.origins), response, preflight }
}

const cache = new WeakMap<GatewayConfig, Compiled>()

/** The policies of a config, compiled once per loaded config (a reload brings a new object). */
function compiled (config: GatewayConfig): Compiled {
  let c = cache.get(config)
  if (c === undefined) {
    const top = config.cors === undefined ? undefined : compile(config.cors)
    const routes = new Map<string, Policy | null>()
    for (const r of config.routes) {
      if (r.cors !== undefined) routes.set(r.name, r.cors === false ? null : compile(r.cors))
    }
    c = { top, routes, any: top !== undefined || [...routes.values()].some((p) => p !== null) }
    cache.set(config, c)
  }
  return c
}

export interface CorsOptions {
  config: () => GatewayConfig
  /** The route a proxied request URL goes to (undefined: none, or a path the proxy refuses). */
  route: (url: string) => RouteConfig | undefined
}

/** The gateway's own endpoints a preflight may be for, by path: their metric label. */
const OWN_LABELS = new Map([
  ['/auth/login', 'auth_login'], ['/auth/refresh', 'auth_refresh'], ['/auth/logout', 'auth_logout'],
  ['/auth/decrypt', 'auth_decrypt'], ['/auth/phone', 'auth_phone'], ['/auth/session', 'auth_session'],
  ['/auth/wechat/authorize', 'auth_wechat_authorize'], ['/auth/wechat/callback', 'auth_wechat_callback'],
  ['/.well-known/jwks.json', 'jwks']
])

/** Add the CORS hook to `app`; register it before anything that may refuse a request (auth, rate limits). */
export function registerCors (app: FastifyInstance, opts: CorsOptions): void {
  app.decorateRequest('corsApplied', false)
  app.addHook('onRequest', function cors (request: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void): void {
    const c = compiled(opts.config())
    if (!c.any) return done()
    // The proxy's catch-all routes ('/' and '/*') serve every path that is not the gateway's own.
    const path = request.routeOptions.url
    const proxied = path === '/*' || path === '/'
    let policy = c.top
    let label = ''
    if (proxied) {
      const route = opts.route(request.url)
      if (route !== undefined) {
        const own = c.routes.get(route.name)
        if (own !== undefined) policy = own ?? undefined
        label = route.name
      }
    } else {
      const q = request.url.indexOf('?')
      label = OWN_LABELS.get(q === -1 ? request.url : request.url.slice(0, q)) ?? ''
    }
    if (policy === undefined) return done()
    request.corsApplied = true
    reply.header('vary', 'Origin')
    const origin = request.headers.origin
    const allowed = origin !== undefined && (policy.origins === undefined || policy.origins.has(origin))
    if (request.method === 'OPTIONS' && origin !== undefined && request.headers['access-control-request-method'] !== undefined) {
      if (label !== '') request.routeName = label
      if (allowed) reply.header('access-control-allow-origin', origin).headers(policy.preflight)
      reply.code(204).send()
      return
    }
    if (allowed) reply.header('access-control-allow-origin', origin).headers(policy.response)
    done()
  })
}

/**
 * An upstream's response headers where a policy applies: its Access-Control-* dropped
 * (the gateway's replace them, or none for a disallowed origin).
 */
export function dropUpstreamCors (headers: Record<string, string | string[]>): void {
  for (const name in headers) {
    if (name.length > 15 && name.startsWith('access-control-')) delete headers[name]
  }
}

/** Two Vary values as one (`Accept-Encoding` and `Origin` → `Accept-Encoding, Origin`); `*` stays `*`. */
export function mergeVary (upstream: string | string[], own: string): string {
  const text = Array.isArray(upstream) ? upstream.join(', ') : upstream
  if (text.trim() === '*') return '*'
  const names = text.split(',').map((s) => s.trim()).filter((s) => s !== '')
  const lower = new Set(names.map((n) => n.toLowerCase()))
  for (const n of own.split(',').map((s) => s.trim())) {
    if (n !== '' && !lower.has(n.toLowerCase())) names.push(n)
  }
  return names.join(', ')
}
