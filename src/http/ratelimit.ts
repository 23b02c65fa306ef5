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

declare module 'fastify' {
  interface FastifyRequest {
    /** The rule the per-route limiter applies (set by the proxy before it runs the limiter). */
    rateRule: RateLimitConfig | null
    /** Verified openid of the caller ('' when anonymous), for `by: openid`. */
    callerOpenid: string
  }
}

export type LimitHook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>

export interface Limiters {
  login: LimitHook
  route: LimitHook
}

export async function registerRateLimits (app: FastifyInstance, opts: {
  store: Store
  keyPrefix: string
  metrics: Metrics
  loginRule: () => RateLimitConfig
}): Promise<Limiters> {
  const { metrics } = opts
  app.decorateRequest('rateRule', null)
  app.decorateRequest('callerOpenid', '')
  await app.register(rateLimit, {
    global: false,
    ...(opts.store.redis !== undefined ? { redis: opts.store.redis } : {}),
    nameSpace: `${opts.keyPrefix}rl:`,
    skipOnError: true,
    // RateLimit-Limit / -Remaining / -Reset (IETF draft) and Retry-After
    enableDraftSpec: true,
    errorResponseBuilder: (_request, ctx) => new GatewayError('RATE_LIMITED', { data: { retryAfter: Math.ceil(ctx.ttl / 1000) } })
  })
  const route = app.rateLimit({
    max: (request) => request.rateRule?.max ?? 1,
    timeWindow: (request) => request.rateRule?.window ?? 60_000,
    keyGenerator: (request) => {
      const by = request.rateRule?.by === 'openid' && request.callerOpenid !== '' ? `u:${request.callerOpenid}` : `ip:${request.ip}`
      return `${request.routeName}:${by}`
    },
    onExceeded: (request) => { metrics.rateLimited.inc({ route: request.routeName }) }
  }) as LimitHook
  const login = app.rateLimit({
    max: () => opts.loginRule().max,
    timeWindow: () => opts.loginRule().window,
    // No identity before login: always per client IP (the real one, per trustProxy).
    keyGenerator: (request) => `login:ip:${request.ip}`,
    onExceeded: () => { metrics.rateLimited.inc({ route: 'auth_login' }) }
  }) as LimitHook
  return { login, route }
}
