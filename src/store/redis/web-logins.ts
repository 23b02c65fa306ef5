/** The Redis store's WebLoginPort: both kinds expire by themselves (PX), so Redis needs no bound of its own here. */
import type { WebLoginPort } from '../types.js'
import { ms, type RedisContext } from './context.js'

export function createRedisWebLogins ({ main, keys, op }: RedisContext): WebLoginPort {
  return {
    async putOnce (kind, key, value, ttlMs) {
      await op('putOnce', () => main.set(keys.once(kind, key), value, 'PX', ms(ttlMs)))
    },
    async takeOnce (kind, key) {
      // GETDEL (Redis 6.2+) as a transaction: one key, one slot, atomic everywhere.
      const k = keys.once(kind, key)
      const r = await op('takeOnce', () => main.multi().get(k).del(k).exec())
      const got = r?.[0]?.[1]
      return typeof got === 'string' ? got : null
    },
    async setWeChatGrant (appId, openid, grant, ttlMs) {
      await op('setWeChatGrant', () => main.set(keys.grant(appId, openid), grant, 'PX', ms(ttlMs)))
    },
    async getWeChatGrant (appId, openid) {
      return await op('getWeChatGrant', () => main.get(keys.grant(appId, openid)))
    }
  }
}
