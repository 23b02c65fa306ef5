/**
 * The admin access_token endpoints where the admin port has no gateway behind it:
 * the workers' primary (`workers` > 1) serves /healthz, /readyz and /metrics for
 * all workers, so it serves /wechat/access-token too, on the same Redis as the
 * workers (the token, its lock and forcedAt are shared with them). A config the
 * workers reloaded reaches it through `reload` (apps and their AppSecrets, the
 * WeChat transport settings); the store and admin.apiToken are restart-only.
 */
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/schema.js'
import { createStore } from '../store/index.js'
import { registerAccessTokenAdmin } from './admin-routes.js'
import { createWeChatHttp, type WeChatHttp } from './http.js'
import { createWeChatHub } from './hub.js'

// 60 s: a refresh still on a replaced transport finishes before it closes (as in gateway/config.ts)
const RETIRE_HTTP_MS = 60_000

export interface TokenAdmin {
  /** Serve `config`'s apps and WeChat settings from now on. */
  reload: (config: GatewayConfig) => void
  /** Release the store, the transports and the refresh timer. */
  close: () => Promise<void>
}

type WeChatSettings = GatewayConfig['wechat']
const transportOf = (w: WeChatSettings) => JSON.stringify([w.baseUrl, w.timeout, w.retries])

/** Add the endpoints to `admin` when admin.apiToken is set. */
export function serveTokenAdmin (admin: FastifyInstance, config: GatewayConfig, logger: Logger): TokenAdmin | undefined {
  if (config.admin.apiToken === undefined) return undefined
  const store = createStore(config.store, logger.child({ component: 'store' }))
  const newHttp = (w: WeChatSettings) => createWeChatHttp({ baseUrl: w.baseUrl, timeoutMs: w.timeout, retries: w.retries, logger: logger.child({ component: 'wechat' }) })
  const appsOf = (c: GatewayConfig) => new Map(c.wechat.apps.map((a) => [a.appId, a]))
  let http = newHttp(config.wechat)
  let transport = transportOf(config.wechat)
  let apps = appsOf(config)
  const retired = new Set<WeChatHttp>()
  const retiring = new Set<NodeJS.Timeout>()
  const hub = createWeChatHub({ redis: store.redisConnection(), keyPrefix: config.store.keyPrefix, http: () => http, apps: () => apps, logger, now: Date.now })
  registerAccessTokenAdmin(admin, { apiToken: config.admin.apiToken, tokens: hub.tokens })
  return {
    reload (next) {
      apps = appsOf(next)
      if (transportOf(next.wechat) === transport) return
      const old = http
      http = newHttp(next.wechat)
      transport = transportOf(next.wechat)
      retired.add(old)
      const timer = setTimeout(() => {
        retiring.delete(timer)
        retired.delete(old)
        old.close().catch(() => {})
      }, RETIRE_HTTP_MS)
      timer.unref()
      retiring.add(timer)
    },
    async close () {
      hub.close()
      for (const timer of retiring) clearTimeout(timer)
      await Promise.allSettled([http.close(), ...[...retired].map(async (h) => await h.close()), store.close()])
    }
  }
}
