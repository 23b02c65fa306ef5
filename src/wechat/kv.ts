/**
 * Small pieces the hub's store adapters share: a map whose entries expire on an
 * injectable clock (memory adapters) and the Redis call wrapper that turns any
 * failure into STORE_UNAVAILABLE (the cause kept for the log).
 */
import { GatewayError } from '../errors.js'

export interface ExpiringMap<T> {
  get (key: string): T | null
  set (key: string, value: T, ttlMs: number): void
  delete (key: string): void
}

/** Entries vanish `ttlMs` after they were set, by `now()`. */
export function expiringMap<T> (now: () => number): ExpiringMap<T> {
  const entries = new Map<string, { value: T, until: number }>()
  return {
    get (key) {
      const e = entries.get(key)
      if (e === undefined) return null
      if (e.until <= now()) {
        entries.delete(key)
        return null
      }
      return e.value
    },
    set (key, value, ttlMs) {
      entries.set(key, { value, until: now() + Math.max(1, ttlMs) })
    },
    delete (key) {
      entries.delete(key)
    }
  }
}

/** Run one Redis command; any failure becomes STORE_UNAVAILABLE. */
export async function storeCall<T> (name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    throw new GatewayError('STORE_UNAVAILABLE', { detail: `redis ${name}: ${err instanceof Error ? err.message : String(err)}`, cause: err })
  }
}
