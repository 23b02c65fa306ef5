/**
 * The memory store's WebLoginPort: single-use entries and WeChat grants in
 * maps bounded by maxEntries (oldest evicted: a login starts again), each
 * entry with its expiry (ignored on read, swept with the rest). States and
 * tickets have a map and a bound each: states cost one unauthenticated request,
 * and a flood of them must not push out the tickets of logins that finished.
 */
import type { OnceKind, WebLoginPort } from '../types.js'
import { boundedSet, liveGet } from './bounded.js'

interface Entry { value: string, expiresAt: number }

export function createMemoryWebLogins (max: number, now: () => number, check: () => void): WebLoginPort & { sweep (t: number): void } {
  const once: Record<OnceKind, Map<string, Entry>> = { state: new Map(), ticket: new Map() }
  const grants = new Map<string, Entry>()
  const live = (map: Map<string, Entry>, key: string): Entry | undefined => liveGet(map, key, now())
  return {
    async putOnce (kind, key, value, ttlMs) {
      check()
      boundedSet(once[kind], key, { value, expiresAt: now() + ttlMs }, max)
    },
    async takeOnce (kind, key) {
      check()
      const e = live(once[kind], key)
      once[kind].delete(key)
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
      for (const map of [once.state, once.ticket, grants]) for (const [k, v] of map) if (v.expiresAt <= t) map.delete(k)
    }
  }
}
