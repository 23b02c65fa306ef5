/** Login claims in process memory: the memory store's LoginClaimPort (one instance: no one else to share with). */
import type { LoginClaim, LoginClaimPort, LoginState } from '../types.js'
import { boundedSet } from './bounded.js'

export interface MemoryLogins extends LoginClaimPort {
  sweep (now: number): void
}

export function createMemoryLogins (max: number, now: () => number, check: () => void): MemoryLogins {
  // By login key: 'p' pending (value = owner), 'd' remembered outcome, 'r' transient failure.
  const logins = new Map<string, { state: 'p' | 'd' | 'r', value: string, expiresAt: number }>()
  const entry = (key: string) => {
    const e = logins.get(key)
    if (e !== undefined && e.expiresAt <= now()) {
      logins.delete(key)
      return undefined
    }
    return e
  }
  return {
    async claimLogin (key, owner, ttlMs): Promise<LoginClaim> {
      check()
      const e = entry(key)
      if (e?.state === 'd') return { status: 'done', outcome: e.value }
      if (e?.state === 'p' && e.value !== owner) return { status: 'pending' }
      boundedSet(logins, key, { state: 'p', value: owner, expiresAt: now() + ttlMs }, max)
      return { status: 'claimed' }
    },

    async peekLogin (key): Promise<LoginState> {
      check()
      const e = entry(key)
      if (e === undefined) return { status: 'none' }
      if (e.state === 'p') return { status: 'pending' }
      return { status: e.state === 'd' ? 'done' : 'failed', outcome: e.value }
    },

    async finishLogin (key, owner, outcome, remember, ttlMs) {
      check()
      const e = entry(key)
      if (e?.state !== 'p' || e.value !== owner) return false
      boundedSet(logins, key, { state: remember ? 'd' : 'r', value: outcome, expiresAt: now() + ttlMs }, max)
      return true
    },

    async releaseLogin (key, owner) {
      check()
      const e = entry(key)
      if (e?.state === 'p' && e.value === owner) logins.delete(key)
    },

    sweep (t) {
      for (const [k, l] of logins) if (l.expiresAt <= t) logins.delete(k)
    }
  }
}
