/**
 * Where the apps' access_tokens live so that every gateway instance uses the same
 * one: a narrow port (get/set a token per app, a lock with a lease so one instance
 * at a time talks to WeChat) with a memory implementation (one instance, tests)
 * and a Redis one (any topology: both keys of an app share a hash tag). Failures to
 * reach Redis are STORE_UNAVAILABLE, fast.
 */
import type { Cluster, Redis } from 'ioredis'
import { expiringMap, storeCall } from './kv.js'

/** An app's access_token as cached. All times epoch ms. */
export interface CachedToken {
  accessToken: string
  /** WeChat's expires_in counted from just before the request. */
  expiresAt: number
  /** When it was obtained. */
  obtainedAt: number
  /** The last refresh with force_refresh: true for this app (0: none known); carried from token to token. */
  forcedAt: number
}

export interface TokenCachePort {
  get (appId: string): Promise<CachedToken | null>
  /** Store the app's token for `ttlMs` (its remaining life). */
  set (appId: string, value: CachedToken, ttlMs: number): Promise<void>
  /** Take the lock `key` for `leaseMs` unless someone holds it; true when taken. */
  tryLock (key: string, owner: string, leaseMs: number): Promise<boolean>
  /** Release the lock if `owner` still holds it. */
  unlock (key: string, owner: string): Promise<void>
}

/** One instance's cache (the memory store); `now` moves token expiry and leases in tests. */
export function createMemoryTokenCache (now: () => number = Date.now): TokenCachePort {
  const tokens = expiringMap<CachedToken>(now)
  const locks = expiringMap<string>(now)
  return {
    async get (appId) {
      const t = tokens.get(appId)
      return t === null ? null : { ...t }
    },
    async set (appId, value, ttlMs) {
      tokens.set(appId, { ...value }, ttlMs)
    },
    async tryLock (key, owner, leaseMs) {
      if (locks.get(key) !== null) return false
      locks.set(key, owner, leaseMs)
      return true
    },
    async unlock (key, owner) {
      if (locks.get(key) === owner) locks.delete(key)
    }
  }
}

// KEYS: lock. ARGV: owner. Delete only our own lock (the lease may have passed to another instance).
const UNLOCK_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

/** The shared cache on the store's Redis connection (single, Sentinel or Cluster). */
export function createRedisTokenCache (redis: Redis | Cluster, keyPrefix: string): TokenCachePort {
  // {wxtoken:<appId>}: the token and its lock in one Cluster slot.
  const tokenKey = (appId: string) => `${keyPrefix}{wxtoken:${appId}}`
  const lockKey = (key: string) => `${keyPrefix}{wxtoken:${key}}:lock`
  return {
    async get (appId) {
      const text = await storeCall('tokenGet', () => redis.get(tokenKey(appId)))
      return text === null ? null : parse(text)
    },
    async set (appId, value, ttlMs) {
      await storeCall('tokenSet', () => redis.set(tokenKey(appId), JSON.stringify(value), 'PX', Math.max(1, Math.round(ttlMs))))
    },
    async tryLock (key, owner, leaseMs) {
      return (await storeCall('tokenLock', () => redis.set(lockKey(key), owner, 'PX', Math.max(1, Math.round(leaseMs)), 'NX'))) === 'OK'
    },
    async unlock (key, owner) {
      await storeCall('tokenUnlock', () => redis.eval(UNLOCK_LUA, 1, lockKey(key), owner))
    }
  }
}

function parse (text: string): CachedToken | null {
  try {
    const v = JSON.parse(text) as Partial<CachedToken>
    if (typeof v.accessToken !== 'string' || typeof v.expiresAt !== 'number') return null
    return { accessToken: v.accessToken, expiresAt: v.expiresAt, obtainedAt: v.obtainedAt ?? 0, forcedAt: v.forcedAt ?? 0 }
  } catch {
    // Written by another version or by hand: treat as absent, the next fetch overwrites it.
    return null
  }
}
