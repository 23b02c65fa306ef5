/**
 * The credential hub's state for one gateway: the shared access_token service and
 * the verified phone numbers, both on the store's Redis when there is one (every
 * instance sees the same) and in memory otherwise, plus the timer that refreshes
 * tokens ahead of expiry. The WeChat transport is the current config snapshot's.
 */
import type { Cluster, Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import { createAccessTokenService, type AccessTokenService, type TokenApp } from './access-token.js'
import type { WeChatHttp } from './http.js'
import { createMemoryPhones, createRedisPhones, type PhonePort } from './phone.js'
import { createMemoryTokenCache, createRedisTokenCache } from './token-cache.js'

export interface WeChatHub {
  readonly tokens: AccessTokenService
  readonly phones: PhonePort
  /** The current snapshot's WeChat transport. */
  readonly http: () => WeChatHttp
  readonly logger: Logger
  /** Stop the refresh timer. */
  close (): void
}

export interface WeChatHubOptions {
  /** The store's connection; absent (memory store): one instance's memory. */
  redis?: Redis | Cluster | undefined
  keyPrefix: string
  http: () => WeChatHttp
  /** The configured apps (current snapshot). */
  apps: () => ReadonlyMap<string, TokenApp>
  logger: Logger
  /** Where refreshes are counted; absent (the workers' primary): not counted. */
  metrics?: Metrics | undefined
  now: () => number
}

// 30 s: a token is refreshed 4 min before it expires, so a tick every 30 s has 8 chances.
const TICK_MS = 30_000

export function createWeChatHub (opts: WeChatHubOptions): WeChatHub {
  const { metrics, now } = opts
  const logger = opts.logger.child({ component: 'wechat-hub' })
  const tokens = createAccessTokenService({
    cache: opts.redis === undefined ? createMemoryTokenCache(now) : createRedisTokenCache(opts.redis, opts.keyPrefix),
    http: opts.http,
    app: (appId) => opts.apps().get(appId),
    logger,
    now,
    onRefresh: (app, reason, forced, ok) => metrics?.wechatTokenRefreshes.inc({ app, reason, mode: forced ? 'force' : 'normal', result: ok ? 'success' : 'failure' })
  })
  const phones = opts.redis === undefined ? createMemoryPhones(now) : createRedisPhones(opts.redis, opts.keyPrefix)
  const timer = setInterval(() => {
    tokens.tick(opts.apps().keys()).catch(() => {})
  }, TICK_MS)
  timer.unref()
  return { tokens, phones, http: opts.http, logger, close: () => clearInterval(timer) }
}
