/**
 * The memory store's RolloutPort: one instance only, so the lease is always
 * this instance's while it holds it, and the reports are its own.
 */
import type { RolloutPort, RolloutRecord } from '../types.js'
import { liveGet } from './bounded.js'

interface Timed<T> { value: T, expiresAt: number }

export function createMemoryRollouts (now: () => number, check: () => void): RolloutPort & { sweep (t: number): void } {
  const records = new Map<string, Timed<RolloutRecord>>()
  const leases = new Map<string, Timed<string>>()
  const windows = new Map<string, Timed<Map<string, string>>>()
  /** The value under `key` unless it has expired (bounded.ts's liveGet drops an expired one). */
  const live = <T>(map: Map<string, Timed<T>>, key: string): T | undefined => liveGet(map, key, now())?.value
  return {
    async getRollout (route) {
      check()
      const r = live(records, route)
      return r === undefined ? null : { ...r }
    },
    async putRollout (route, expected, value, ttlMs) {
      check()
      if ((live(records, route)?.version ?? 0) !== expected) return false
      records.set(route, { value: { version: expected + 1, value }, expiresAt: now() + ttlMs })
      return true
    },
    async leaseRollout (route, holder, ttlMs) {
      check()
      const held = live(leases, route)
      if (held !== undefined && held !== holder) return false
      leases.set(route, { value: holder, expiresAt: now() + ttlMs })
      return true
    },
    async reportRollout (route, window, instance, counts, ttlMs) {
      check()
      const key = route + '\t' + window
      const w = live(windows, key) ?? new Map<string, string>()
      w.set(instance, counts)
      windows.set(key, { value: w, expiresAt: now() + ttlMs })
    },
    async rolloutReports (route, window) {
      check()
      return [...(live(windows, route + '\t' + window)?.values() ?? [])]
    },
    sweep (t) {
      for (const map of [records, leases, windows] as Array<Map<string, Timed<unknown>>>) {
        for (const [k, v] of map) if (v.expiresAt <= t) map.delete(k)
      }
    }
  }
}
