/**
 * Rate limits on @fastify/rate-limit: counters in Redis when the store is Redis
 * (shared by every instance), in memory otherwise. The rules are read from the
 * current snapshot on every request, so a reload changes them at once.
 * When Redis is unreachable the limiter lets requests through (skipOnError):
 * rate limiting protects capacity, it is not an authentication control, and
 * the store-down alert fires anyway.
 */
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError } from '../errors.js'
import type { RateLimitConfig } from '../config/schema.js'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'

export type LimitHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

/** What the per-route limiter reads: a FastifyRequest has it all; a WebSocket upgrade passes just this. */
export interface LimitSubject {
  /** The matched route: counters are per route (and wegate_rate_limited_total's label). */
  routeName: string
  /**
   * The counters' namespace when it is not a route's: the gateway's own endpoints use their path
   * (a route name cannot contain '/', so a route named like them never shares their counters).
   */
  scope?: string
  /** The route's rule (null: the caller should not be asking). */
  rateRule: RateLimitConfig | null
  /** Verified openid ('' when anonymous), for `by: openid`. */
  callerOpenid: string
  /** The client IP per trustProxy, for `by: ip` and anonymous callers. */
  ip: string
}

/**
 * Count one request against its route's rule. Past the limit: throws RATE_LIMITED
 * (429, `Retry-After` and RateLimit-* headers on the error) and counts it in
 * wegate_rate_limited_total. Otherwise: the RateLimit-* headers to send.
 */
export type RouteLimiter = (subject: LimitSubject) => Promise<Record<string, string>>

export interface Limiters {
  login: LimitHook
  /** The per-route limiter: one counter per route and caller for HTTP requests and WebSocket upgrades alike. */
  routeLimit: RouteLimiter
}

export async function registerRateLimits (app: FastifyInstance, opts: {
  store: Store
  keyPrefix: string
  metrics: Metrics
  loginRule: () => RateLimitConfig
}): Promise<Limiters> {
  const { metrics } = opts
  const redis = opts.store.redisConnection()
  await app.register(rateLimit, {
    global: false,
    ...(redis !== undefined ? { redis } : {}),
    nameSpace: `${opts.keyPrefix}rl:`,
    skipOnError: true,
    // RateLimit-Limit / -Remaining / -Reset (IETF draft) and Retry-After
    enableDraftSpec: true,
    errorResponseBuilder: (_request, ctx) => new GatewayError('RATE_LIMITED', { data: { retryAfter: Math.ceil(ctx.ttl / 1000) } })
  })
  // One limiter (one counter store) for HTTP requests and WebSocket upgrades of a route:
  // createRateLimit gives the decision and leaves the answer to us, so both paths answer alike.
  // The limiter is handed a LimitSubject standing in for the request (see routeLimit).
  const subjectOf = (request: FastifyRequest) => request as unknown as LimitSubject
  const check = app.createRateLimit({
    max: (request) => subjectOf(request).rateRule?.max ?? 1,
    timeWindow: (request) => subjectOf(request).rateRule?.window ?? 60_000,
    keyGenerator: (request) => {
      const s = subjectOf(request)
      const by = s.rateRule?.by === 'openid' && s.callerOpenid !== '' ? `u:${s.callerOpenid}` : `ip:${s.ip}`
      return `${s.scope ?? s.routeName}:${by}`
    }
  })
  const routeLimit: RouteLimiter = async (subject) => {
    // The limiter reads the LimitSubject fields, and routeOptions.config for a groupId (none
    // here): the subject with an empty routeOptions stands in for the request.
    const r = await check({ ...subject, routeOptions: {} } as unknown as FastifyRequest)
    if (r.isAllowed) return {} // an allowList hit (none configured today)
    const headers: Record<string, string> = {
      'RateLimit-Limit': String(r.max),
      'RateLimit-Remaining': String(r.remaining),
      'RateLimit-Reset': String(r.ttlInSeconds)
    }
    if (!r.isExceeded) return headers
    metrics.rateLimited.inc({ route: subject.routeName })
    headers['RateLimit-Remaining'] = '0'
    headers['Retry-After'] = String(r.ttlInSeconds)
    throw new GatewayError('RATE_LIMITED', { data: { retryAfter: Math.ceil(r.ttl / 1000) }, headers })
  }
  const login = app.rateLimit({
    max: () => opts.loginRule().max,
    timeWindow: () => opts.loginRule().window,
    // No identity before login: always per client IP (the real one, per trustProxy).
    // Keyed by the path, as /auth/phone's are: a route name cannot start with '/', so a
    // route named `login` never shares this counter.
    keyGenerator: (request) => `/auth/login:ip:${request.ip}`,
    onExceeded: () => { metrics.rateLimited.inc({ route: 'auth_login' }) }
  }) as LimitHook
  return { login, routeLimit }
}
