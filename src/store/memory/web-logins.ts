/**
 * The memory store's WebLoginPort: single-use entries and WeChat grants in
 * maps bounded by maxEntries (oldest evicted: a login starts again), each
 * entry with its expiry (ignored on read, swept with the rest).
 */
import type { WebLoginPort } from '../types.js'
import { boundedSet, liveGet } from './bounded.js'

interface Entry { value: string, expiresAt: number }

export function createMemoryWebLogins (max: number, now: () => number, check: () => void): WebLoginPort & { sweep (t: number): void } {
  const once = new Map<string, Entry>()
  const grants = new Map<string, Entry>()
  const live = (map: Map<string, Entry>, key: string): Entry | undefined => liveGet(map, key, now())
  return {
    async putOnce (key, value, ttlMs) {
      check()
      boundedSet(once, key, { value, expiresAt: now() + ttlMs }, max)
    },
    async takeOnce (key) {
      check()
      const e = live(once, key)
      once.delete(key)
      return e?.value ?? null
    },
    async setWeChatGrant (appId, openid, grant, ttlMs) {
      check()
      boundedSet(grants, appId + '\t' + openid, { value: grant, expiresAt: now() + ttlMs }, max)
    },
    async getWeChatGrant (appId, openid) {
      check()
      return live(grants, appId + '\t' + openid)?.value ?? null
    },
    sweep (t) {
      for (const map of [once, grants]) for (const [k, v] of map) if (v.expiresAt <= t) map.delete(k)
    }
  }
}
