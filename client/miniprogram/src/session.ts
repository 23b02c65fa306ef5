/**
 * The session kept in the mini program's storage, and when its tokens are due.
 * Expiry times are the phone's clock at receipt plus the server's `expiresIn`:
 * only elapsed time on the phone matters, never the difference between the
 * phone's clock and the server's.
 */
import type { Platform } from './platform'

export interface Session {
  accessToken: string
  refreshToken: string
  openid: string
  unionid?: string
  /** Phone clock (ms) when this pair was received. */
  receivedAt: number
  /** receivedAt + expiresIn. */
  accessExpiresAt: number
  /** receivedAt + refreshExpiresIn. */
  refreshExpiresAt: number
}

/** The gateway's login / refresh answer (`data` of the envelope). */
export interface TokenPair {
  accessToken: string
  refreshToken: string
  expiresIn: number
  refreshExpiresIn: number
  openid: string
  unionid?: string
}

export function isTokenPair (v: unknown): v is TokenPair {
  const p = v as Partial<TokenPair> | null
  return typeof p === 'object' && p !== null && typeof p.accessToken === 'string' && typeof p.refreshToken === 'string' &&
    typeof p.expiresIn === 'number' && typeof p.refreshExpiresIn === 'number' && typeof p.openid === 'string'
}

export function sessionFrom (pair: TokenPair, now: number): Session {
  const s: Session = {
    accessToken: pair.accessToken,
    refreshToken: pair.refreshToken,
    openid: pair.openid,
    receivedAt: now,
    accessExpiresAt: now + pair.expiresIn * 1000,
    refreshExpiresAt: now + pair.refreshExpiresIn * 1000
  }
  if (typeof pair.unionid === 'string') s.unionid = pair.unionid
  return s
}

/** Renew this long before expiry: a tenth of the lifetime, at most `cap` ms. */
function dueAt (s: Session, expiresAt: number, cap: number): number {
  return expiresAt - Math.min(cap, Math.max(0, (expiresAt - s.receivedAt) / 10))
}

/** The access token should be renewed before use (expired, or within its last 10 % / 30 s). */
export function accessDue (s: Session, now: number): boolean {
  return now >= dueAt(s, s.accessExpiresAt, 30_000)
}

/** The refresh token is near its end (last 10 % / 1 h): rotate it while it still works. */
export function refreshDue (s: Session, now: number): boolean {
  return now >= dueAt(s, s.refreshExpiresAt, 3_600_000)
}

/** The refresh token is past its lifetime: only a new login helps. */
export function refreshDead (s: Session, now: number): boolean {
  return now >= s.refreshExpiresAt
}

/**
 * Storage under one key, read on every use so that clients sharing the key (a
 * relaunch, or a second client made by mistake) see the same tokens. If the
 * platform refuses a write (storage full), the session lives on in memory.
 */
export class SessionStore {
  private memory: Session | null = null
  private unsaved = false

  constructor (private readonly platform: Platform, private readonly key: string) {}

  load (): Session | null {
    if (this.unsaved) return this.memory
    let v: unknown
    try {
      v = this.platform.getStorageSync(this.key)
      if (typeof v === 'string') v = v === '' ? null : JSON.parse(v)
    } catch {
      return this.memory
    }
    const s = v as Partial<Session> | null
    if (typeof s !== 'object' || s === null || typeof s.accessToken !== 'string' || typeof s.refreshToken !== 'string' ||
      typeof s.openid !== 'string' || typeof s.receivedAt !== 'number' || typeof s.accessExpiresAt !== 'number' ||
      typeof s.refreshExpiresAt !== 'number') return null
    return s as Session
  }

  save (s: Session): void {
    this.memory = s
    try {
      this.platform.setStorageSync(this.key, JSON.stringify(s))
      this.unsaved = false
    } catch {
      this.unsaved = true
    }
  }

  clear (): void {
    this.memory = null
    try {
      this.platform.removeStorageSync(this.key)
      this.unsaved = false
    } catch {
      this.unsaved = true
    }
  }
}
