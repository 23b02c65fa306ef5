/**
 * The Redis store's LoginClaimPort: one key per (appId, code) hash, value
 * 'p:<owner>' (claimed), 'd:<outcome>' (remembered) or 'r:<outcome>' (a
 * transient failure, for the logins already waiting).
 */
import type { LoginClaimPort } from '../types.js'
import { ms, type RedisContext } from './context.js'

export function createRedisLogins ({ main, cmd, keys, op }: RedisContext): LoginClaimPort {
  return {
    async claimLogin (key, owner, ttlMs) {
      const r = await op('claimLogin', () => cmd.wgClaimLogin(keys.login(key), owner, ms(ttlMs)))
      if (r[0] === 'done') return { status: 'done', outcome: r[1] }
      return r[0] === 'claimed' ? { status: 'claimed' } : { status: 'pending' }
    },

    async peekLogin (key) {
      const v = await op('peekLogin', () => main.get(keys.login(key)))
      if (v === null) return { status: 'none' }
      if (v.startsWith('d:')) return { status: 'done', outcome: v.slice(2) }
      if (v.startsWith('r:')) return { status: 'failed', outcome: v.slice(2) }
      return { status: 'pending' }
    },

    async finishLogin (key, owner, outcome, remember, ttlMs) {
      const value = (remember ? 'd:' : 'r:') + outcome
      return await op('finishLogin', () => cmd.wgFinishLogin(keys.login(key), owner, value, ms(ttlMs))) === 1
    },

    async releaseLogin (key, owner) {
      await op('releaseLogin', () => cmd.wgReleaseLogin(keys.login(key), owner))
    }
  }
}
