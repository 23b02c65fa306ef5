/**
 * RevocationSet: the deny lists the per-request check reads, as plain Maps. The
 * memory store's whole revocation state and the Redis store's local mirror.
 */
import type { RevocationSubject } from './types.js'

/**
 * The deny lists the hot-path check reads: revoked jtis, revoked families and
 * per-user cutoffs, each entry kept until its `until` (ms) and never dropped
 * before (no count bound: an evicted entry would un-revoke a token). Used as the
 * whole revocation state by the memory store and as the local mirror by the Redis store.
 */
export class RevocationSet {
  readonly jtis = new Map<string, number>()
  readonly fids = new Map<string, number>()
  /** appid → openid → latest logout-all cutoff and how long to keep it (nested: no key building per check). */
  readonly users = new Map<string, Map<string, { cutoff: number, until: number }>>()
  private userCount = 0
  /**
   * Tokens issued before this (ms, a whole second: iat has one-second resolution) are denied:
   * when the store's state began (first start, or a detected loss of a Redis' data).
   */
  private notBefore = 0

  /** Deny every token issued before the second of `ms` (never moves back). */
  denyIssuedBefore (ms: number): void {
    this.notBefore = Math.max(this.notBefore, Math.floor(ms / 1000) * 1000)
  }

  /** Users with a logout-all cutoff in force. */
  get userEntries (): number {
    return this.userCount
  }

  addJti (jti: string, until: number): void {
    const prev = this.jtis.get(jti)
    this.jtis.set(jti, Math.max(prev ?? 0, until))
  }

  addFid (fid: string, until: number): void {
    const prev = this.fids.get(fid)
    this.fids.set(fid, Math.max(prev ?? 0, until))
  }

  addUser (appid: string, openid: string, cutoff: number, until: number): void {
    let app = this.users.get(appid)
    if (app === undefined) {
      app = new Map()
      this.users.set(appid, app)
    }
    const prev = app.get(openid)
    if (prev === undefined) {
      app.set(openid, { cutoff, until })
      this.userCount++
    } else {
      app.set(openid, { cutoff: Math.max(prev.cutoff, cutoff), until: Math.max(prev.until, until) })
    }
  }

  /** Cutoff (ms) of the user's last logout-all, or 0. */
  userCutoff (appid: string, openid: string): number {
    return this.users.get(appid)?.get(openid)?.cutoff ?? 0
  }

  /** The hot check: a few Map lookups, no allocation. */
  has (s: RevocationSubject): boolean {
    if (s.iatMs < this.notBefore || this.jtis.has(s.jti) || this.fids.has(s.fid)) return true
    const u = this.users.get(s.appid)?.get(s.openid)
    return u !== undefined && s.iatMs < u.cutoff
  }

  /** Drop entries whose `until` has passed. */
  sweep (now: number): void {
    for (const [k, until] of this.jtis) if (until <= now) this.jtis.delete(k)
    for (const [k, until] of this.fids) if (until <= now) this.fids.delete(k)
    for (const [appid, app] of this.users) {
      for (const [openid, u] of app) {
        if (u.until <= now) { app.delete(openid); this.userCount-- }
      }
      if (app.size === 0) this.users.delete(appid)
    }
  }
}
