/**
 * Refresh families in process memory: the memory store's FamilyPort. Rotation is
 * one synchronous function, so it is atomic like the Redis script. Bounded by
 * `max` families (oldest login evicted first: its user logs in again).
 */
import type { FamilyPort, RefreshRecord, RotateInput, RotateResult, StoreLogger } from '../types.js'
import { boundedSet } from './bounded.js'

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

/** Kill a family's refresh tokens (the entry stays, marked, until its absolute expiry). */
function kill (f: Family): void {
  f.revoked = true
  f.cur = null
  f.spent.clear()
  f.grace.clear()
}

function rotate (families: Map<string, Family>, input: RotateInput): RotateResult {
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
    kill(f)
    return { status: 'reused', fid: input.fid }
  }
  return { status: 'invalid' }
}

export interface MemoryFamilies extends FamilyPort {
  /** Kill the family's refresh tokens (revokeFamily's half that is not a deny list). */
  kill (fid: string): void
  /** Drop families past their absolute end. */
  sweep (now: number): void
}

export function createMemoryFamilies (max: number, logger: StoreLogger, check: () => void): MemoryFamilies {
  const families = new Map<string, Family>()
  return {
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
      return rotate(families, input)
    },

    async familyToken (fid, hash, nowMs) {
      check()
      const f = families.get(fid)
      if (f === undefined || f.revoked || nowMs >= f.familyExpiresAt) return 'none'
      if (f.cur === hash) return 'current'
      return (f.spent.get(hash) ?? 0) > nowMs ? 'spent' : 'none'
    },

    kill (fid) {
      const f = families.get(fid)
      if (f !== undefined) kill(f)
    },

    sweep (now) {
      for (const [k, f] of families) if (f.familyExpiresAt <= now) families.delete(k)
    }
  }
}
