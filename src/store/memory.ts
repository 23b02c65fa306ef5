/**
 * In-process Store: same semantics as the Redis store, for one instance and
 * development. Sessions and refresh families are bounded by `maxEntries`
 * (oldest inserted evicted first: a user logs in again). Revocations are never
 * evicted — forgetting one would make a logged-out token work again — they are
 * bounded by their lifetime instead: a jti or fid entry lives at most
 * accessTtl + clockSkew, a logout-all cutoff sessionTtl, and every revocation
 * needs a live token, so their number follows the login rate. Expired entries
 * of every kind are swept every minute.
 */
import { GatewayError } from '../errors.js'
import type { StoreConfig } from '../config/schema.js'
import type {
  LoginClaim, LoginState, RefreshRecord, RevocationSubject, RotateInput, RotateResult, Store, StoreLogger, StoreOptions
} from './types.js'

// 60 s: how often expired entries are swept (they are also ignored on read)
const SWEEP_INTERVAL_MS = 60_000

/** Key for per-user maps; \t cannot occur in an appId or openid. */
function userKey (appid: string, openid: string): string {
  return appid + '\t' + openid
}

/** Insert and keep the map within `max` entries, evicting the oldest insertion. */
function boundedSet<K, V> (map: Map<K, V>, key: K, value: V, max: number): boolean {
  map.delete(key) // re-insert at the end: the entry is the newest again
  map.set(key, value)
  if (map.size <= max) return false
  const oldest = map.keys().next()
  if (!oldest.done) map.delete(oldest.value)
  return true
}

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

interface Family {
  openid: string
  unionid: string | undefined
  appid: string
  familyExpiresAt: number
  createdAt: number
  revoked: boolean
  /** The one live token of the family (rotation is linear) and its expiry. */
  cur: string | null
  curExp: number
  /** Spent token hash → its own expiry: presenting one after grace is reuse. */
  spent: Map<string, number>
  /** Spent token hash → the child it produced, for graceMs after spending. */
  grace: Map<string, { child: string, childExp: number, payload: string, spentAt: number }>
}

function recordOf (fid: string, f: Family, expiresAt: number): RefreshRecord {
  const r: RefreshRecord = {
    fid, openid: f.openid, appid: f.appid, expiresAt, familyExpiresAt: f.familyExpiresAt, createdAt: f.createdAt
  }
  if (f.unionid !== undefined) r.unionid = f.unionid
  return r
}

/** Create the in-memory store (single instance only: state is not shared). */
export function createMemoryStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  const now = opts.now ?? Date.now
  const max = config.maxEntries
  const sessionKeys = new Map<string, { value: string, expiresAt: number }>()
  const families = new Map<string, Family>()
  // Login claims and outcomes by login key: 'p' pending (owner), 'd' remembered outcome, 'r' transient failure.
  const logins = new Map<string, { state: 'p' | 'd' | 'r', value: string, expiresAt: number }>()
  const revocations = new RevocationSet()
  // Nothing issued before this store existed can be checked against it: a restart logs everyone out.
  revocations.denyIssuedBefore(now())
  let closed = false

  const sweep = (): void => {
    const t = now()
    for (const [k, v] of sessionKeys) if (v.expiresAt <= t) sessionKeys.delete(k)
    for (const [k, f] of families) if (f.familyExpiresAt <= t) families.delete(k)
    for (const [k, l] of logins) if (l.expiresAt <= t) logins.delete(k)
    revocations.sweep(t)
    // Not a limit (revocations are kept until they expire): a sign that this instance outgrew the memory store.
    const inForce = { jti: revocations.jtis.size, fid: revocations.fids.size, user: revocations.userEntries }
    if (inForce.jti > max || inForce.fid > max || inForce.user > max) {
      logger.warn({ maxEntries: max, ...inForce }, 'memory store: more revocations in force than store.maxEntries; all are kept until they expire (consider store.type: redis)')
    }
  }
  const timer = setInterval(sweep, SWEEP_INTERVAL_MS)
  timer.unref()

  const check = (): void => {
    if (closed) throw new GatewayError('STORE_UNAVAILABLE', { detail: 'memory store is closed' })
  }

  /** Kill a family's refresh tokens (the family entry stays, marked, until its absolute expiry). */
  const killFamily = (f: Family): void => {
    f.revoked = true
    f.cur = null
    f.spent.clear()
    f.grace.clear()
  }

  const rotate = (input: RotateInput): RotateResult => {
    const t = input.nowMs
    const f = families.get(input.fid)
    if (f === undefined) return { status: 'invalid' }
    if (f.revoked) return { status: 'revoked' }
    if (!input.appids.includes(f.appid)) return { status: 'foreign', appid: f.appid }
    if (f.cur === input.hash) {
      if (t >= f.curExp || t >= f.familyExpiresAt) return { status: 'expired' }
      const childExp = Math.min(t + input.refreshTtlMs, f.familyExpiresAt)
      for (const [h, exp] of f.spent) if (exp <= t) f.spent.delete(h)
      for (const [h, g] of f.grace) if (g.spentAt + input.graceMs < t) f.grace.delete(h)
      f.spent.set(input.hash, f.curExp)
      if (input.graceMs > 0) f.grace.set(input.hash, { child: input.nextHash, childExp, payload: input.grace, spentAt: t })
      f.cur = input.nextHash
      f.curExp = childExp
      return { status: 'rotated', record: recordOf(input.fid, f, childExp) }
    }
    // A retry of a lost answer: only while the child it produced is still the family's live token
    // (a client that has spent the child is not retrying; anything else falls through to reuse).
    const g = f.grace.get(input.hash)
    if (g !== undefined && g.child === f.cur && t - g.spentAt <= input.graceMs) {
      if (t >= f.familyExpiresAt) return { status: 'expired' }
      return { status: 'grace', record: recordOf(input.fid, f, g.childExp), grace: g.payload }
    }
    const spentExp = f.spent.get(input.hash)
    if (spentExp !== undefined && spentExp > t) {
      killFamily(f)
      revocations.addFid(input.fid, t + input.denyMs)
      return { status: 'reused', fid: input.fid }
    }
    return { status: 'invalid' }
  }

  const loginEntry = (key: string) => {
    const e = logins.get(key)
    if (e !== undefined && e.expiresAt <= now()) {
      logins.delete(key)
      return undefined
    }
    return e
  }

  // One instance: a rollback announced here is already everywhere it needs to be.
  const rollbackKeys = new Set<string>()

  return {
    kind: 'memory',

    async announceRollback (key) {
      check()
      rollbackKeys.add(key)
    },

    rollbacks: () => rollbackKeys,

    onRollback () {},

    async claimLogin (key, owner, ttlMs): Promise<LoginClaim> {
      check()
      const e = loginEntry(key)
      if (e?.state === 'd') return { status: 'done', outcome: e.value }
      if (e?.state === 'p' && e.value !== owner) return { status: 'pending' }
      boundedSet(logins, key, { state: 'p', value: owner, expiresAt: now() + ttlMs }, max)
      return { status: 'claimed' }
    },

    async peekLogin (key): Promise<LoginState> {
      check()
      const e = loginEntry(key)
      if (e === undefined) return { status: 'none' }
      if (e.state === 'p') return { status: 'pending' }
      return { status: e.state === 'd' ? 'done' : 'failed', outcome: e.value }
    },

    async finishLogin (key, owner, outcome, remember, ttlMs) {
      check()
      const e = loginEntry(key)
      if (e?.state !== 'p' || e.value !== owner) return false
      boundedSet(logins, key, { state: remember ? 'd' : 'r', value: outcome, expiresAt: now() + ttlMs }, max)
      return true
    },

    async releaseLogin (key, owner) {
      check()
      const e = loginEntry(key)
      if (e?.state === 'p' && e.value === owner) logins.delete(key)
    },

    async setSessionKey (appId, openid, sessionKey, ttlMs) {
      check()
      boundedSet(sessionKeys, userKey(appId, openid), { value: sessionKey, expiresAt: now() + ttlMs }, max)
    },

    async getSessionKey (appId, openid) {
      check()
      const e = sessionKeys.get(userKey(appId, openid))
      if (e === undefined) return null
      if (e.expiresAt <= now()) {
        sessionKeys.delete(userKey(appId, openid))
        return null
      }
      return e.value
    },

    async createFamily (hash, record) {
      check()
      const evicted = boundedSet(families, record.fid, {
        openid: record.openid,
        unionid: record.unionid,
        appid: record.appid,
        familyExpiresAt: record.familyExpiresAt,
        createdAt: record.createdAt,
        revoked: false,
        cur: hash,
        curExp: record.expiresAt,
        spent: new Map(),
        grace: new Map()
      }, max)
      if (evicted) logger.warn({ maxEntries: max }, 'memory store full: oldest refresh family evicted')
    },

    async rotateRefresh (input) {
      check()
      const res = rotate(input)
      // logout-all ends every family born before the cutoff
      if ((res.status === 'rotated' || res.status === 'grace') &&
        res.record.createdAt < revocations.userCutoff(res.record.appid, res.record.openid)) {
        const f = families.get(input.fid)
        if (f !== undefined) killFamily(f)
        revocations.addFid(input.fid, input.nowMs + input.denyMs)
        return { status: 'revoked' }
      }
      return res
    },

    async revokeFamily (fid, untilMs) {
      check()
      const f = families.get(fid)
      if (f !== undefined) killFamily(f)
      revocations.addFid(fid, untilMs)
    },

    async revokeAccessToken (jti, untilMs) {
      check()
      revocations.addJti(jti, untilMs)
    },

    async revokeUserBefore (appId, openid, cutoffMs, untilMs) {
      check()
      revocations.addUser(appId, openid, cutoffMs, untilMs)
    },

    isRevoked (subject) {
      return revocations.has(subject)
    },

    async ping () {
      check()
      return 0
    },

    healthy () {
      return !closed
    },

    async ready () {
      check()
    },

    async close () {
      closed = true
      clearInterval(timer)
    }
  }
}
