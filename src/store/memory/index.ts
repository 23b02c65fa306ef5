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
import { GatewayError } from '../../errors.js'
import type { StoreConfig } from '../../config/schema.js'
import { RevocationSet } from '../revocation-set.js'
import type { AnnouncementPort, RevocationPort, SessionKeyPort, Store, StoreLogger, StoreOptions } from '../types.js'
import { boundedSet } from './bounded.js'
import { createMemoryFamilies } from './families.js'
import { createMemoryLogins } from './logins.js'
import { createMemoryRollouts } from './rollouts.js'
import { createMemoryWebLogins } from './web-logins.js'

// 60 s: how often expired entries are swept (they are also ignored on read)
const SWEEP_INTERVAL_MS = 60_000

/** Key for per-user maps; \t cannot occur in an appId or openid. */
function userKey (appid: string, openid: string): string {
  return appid + '\t' + openid
}

function sessionKeys (max: number, now: () => number, check: () => void): SessionKeyPort & { sweep (t: number): void } {
  const keys = new Map<string, { value: string, expiresAt: number }>()
  return {
    async setSessionKey (appId, openid, sessionKey, ttlMs) {
      check()
      boundedSet(keys, userKey(appId, openid), { value: sessionKey, expiresAt: now() + ttlMs }, max)
    },
    async getSessionKey (appId, openid) {
      check()
      const e = keys.get(userKey(appId, openid))
      if (e === undefined) return null
      if (e.expiresAt <= now()) {
        keys.delete(userKey(appId, openid))
        return null
      }
      return e.value
    },
    sweep (t) {
      for (const [k, v] of keys) if (v.expiresAt <= t) keys.delete(k)
    }
  }
}

/** One instance: a rollback announced here is already everywhere it needs to be. */
function announcements (check: () => void): AnnouncementPort {
  const keys = new Set<string>()
  return {
    async announceRollback (key) {
      check()
      keys.add(key)
    },
    rollbacks: () => keys,
    onRollback () {}
  }
}

/** Create the in-memory store (single instance only: state is not shared). */
export function createMemoryStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  const now = opts.now ?? Date.now
  const max = config.maxEntries
  let closed = false
  const check = (): void => {
    if (closed) throw new GatewayError('STORE_UNAVAILABLE', { detail: 'memory store is closed' })
  }
  const keys = sessionKeys(max, now, check)
  const families = createMemoryFamilies(max, logger, check)
  const logins = createMemoryLogins(max, now, check)
  const webLogins = createMemoryWebLogins(max, now, check)
  const { sweep: sweepRollouts, ...rollouts } = createMemoryRollouts(now, check)
  const revocations = new RevocationSet()
  // Nothing issued before this store existed can be checked against it: a restart logs everyone out.
  revocations.denyIssuedBefore(now())

  const sweep = (): void => {
    const t = now()
    keys.sweep(t)
    families.sweep(t)
    logins.sweep(t)
    webLogins.sweep(t)
    sweepRollouts(t)
    revocations.sweep(t)
    // Not a limit (revocations are kept until they expire): a sign that this instance outgrew the memory store.
    const inForce = { jti: revocations.jtis.size, fid: revocations.fids.size, user: revocations.userEntries }
    if (inForce.jti > max || inForce.fid > max || inForce.user > max) {
      logger.warn({ maxEntries: max, ...inForce }, 'memory store: more revocations in force than store.maxEntries; all are kept until they expire (consider store.type: redis)')
    }
  }
  const timer = setInterval(sweep, SWEEP_INTERVAL_MS)
  timer.unref()

  const deny: RevocationPort = {
    async revokeFamily (fid, untilMs) {
      check()
      families.kill(fid)
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
    userCutoff: (appId, openid) => revocations.userCutoff(appId, openid),
    isRevoked: (subject) => revocations.has(subject)
  }

  return {
    kind: 'memory',
    setSessionKey: keys.setSessionKey,
    getSessionKey: keys.getSessionKey,
    createFamily: families.createFamily,
    rotateRefresh: families.rotateRefresh,
    familyToken: families.familyToken,
    ...deny,
    claimLogin: logins.claimLogin,
    peekLogin: logins.peekLogin,
    finishLogin: logins.finishLogin,
    releaseLogin: logins.releaseLogin,
    putOnce: webLogins.putOnce,
    takeOnce: webLogins.takeOnce,
    setWeChatGrant: webLogins.setWeChatGrant,
    getWeChatGrant: webLogins.getWeChatGrant,
    ...announcements(check),
    ...rollouts,
    redisConnection: () => undefined,
    async ping () {
      check()
      return 0
    },
    healthy: () => !closed,
    async ready () {
      check()
    },
    async close () {
      closed = true
      clearInterval(timer)
    }
  }
}
