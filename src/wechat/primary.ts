/**
 * The admin access_token endpoints where the admin port has no gateway behind it:
 * the workers' primary (`workers` > 1) serves /healthz, /readyz and /metrics for
 * all workers, so it serves /wechat/access-token too, on the same Redis as the
 * workers (the token, its lock and forcedAt are shared with them).
 */
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/schema.js'
import { createStore } from '../store/index.js'
import { registerAccessTokenAdmin } from './admin-routes.js'
import { createWeChatHttp } from './http.js'
import { createWeChatHub } from './hub.js'

/** Add the endpoints to `admin` when admin.apiToken is set; the returned close() releases the store and pool. */
export function serveTokenAdmin (admin: FastifyInstance, config: GatewayConfig, logger: Logger): { close: () => Promise<void> } | undefined {
  if (config.admin.apiToken === undefined) return undefined
  const store = createStore(config.store, logger.child({ component: 'store' }))
  const http = createWeChatHttp({ baseUrl: config.wechat.baseUrl, timeoutMs: config.wechat.timeout, retries: config.wechat.retries, logger: logger.child({ component: 'wechat' }) })
  const apps = new Map(config.wechat.apps.map((a) => [a.appId, a]))
  const hub = createWeChatHub({ redis: store.redisConnection(), keyPrefix: config.store.keyPrefix, http: () => http, apps: () => apps, logger, now: Date.now })
  registerAccessTokenAdmin(admin, { apiToken: config.admin.apiToken, tokens: hub.tokens })
  return {
    async close () {
      hub.close()
      await Promise.allSettled([http.close(), store.close()])
    }
  }
}
