/**
 * Redis Store: shared by every gateway instance, on a single server, a Redis
 * Cluster or behind Sentinel (connect.ts). Refresh families live under one hash
 * tag each, so every family operation is one Lua script (scripts.ts) on one slot;
 * revocations are sorted sets plus a pub/sub message each, mirrored locally by
 * every instance (mirror.ts, kept in sync by sync.ts). A login claims its
 * wx.login code under its own key, so a retry on another instance gets the same
 * answer. Every key has a TTL (keys.ts); times are ms, Lua gets `now` from us.
 */
import { performance } from 'node:perf_hooks'
import { GatewayError } from '../../errors.js'
import type { StoreConfig } from '../../config/schema.js'
import type { FamilyPort, LoginClaimPort, RefreshRecord, RevocationPort, RotateResult, Store, StoreLogger, StoreOptions } from '../types.js'
import { connect, describe, errText } from './connect.js'
import { redisKeys } from './keys.js'
import { createMirror, type Message } from './mirror.js'
import { createRedisRollouts } from './rollouts.js'
import { registerScripts } from './scripts.js'
import { startSync } from './sync.js'

const ms = (n: number) => String(Math.max(1, Math.round(n)))

/** The Lua script's answer {status, openid, unionid, appid, expiresAt, fexp, created} as a record. */
function toRecord (fid: string, r: string[]): RefreshRecord {
  const rec: RefreshRecord = {
    fid, openid: r[1], appid: r[3], expiresAt: Number(r[4]), familyExpiresAt: Number(r[5]), createdAt: Number(r[6])
  }
  if (r[2] !== '' && r[2] !== undefined && r[2] !== null) rec.unionid = r[2]
  return rec
}

/** Create the Redis store; it connects in the background (await `ready()` to wait for it). */
export function createRedisStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  const now = opts.now ?? Date.now
  const keys = redisKeys(config.keyPrefix)
  const conns = connect(config)
  const { main, topology } = conns
  logger.info({ topology, ...describe(config) }, 'redis store: connecting')
  const cmd = registerScripts(main)
  const mirror = createMirror({ main: cmd, keys, now, logger, topology, onStateLost: opts.onStateLost })
  const sync = startSync(conns, mirror, { channel: keys.channel, logger, now })
  const failOpen = config.failMode === 'open'
  let closed = false

  /** Run one Redis operation; any failure becomes STORE_UNAVAILABLE (the cause is for the log only). */
  const op = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    if (closed) throw new GatewayError('STORE_UNAVAILABLE', { detail: 'redis store is closed' })
    const t0 = performance.now()
    try {
      const v = await fn()
      opts.observe?.(name, (performance.now() - t0) / 1000, true)
      return v
    } catch (err) {
      opts.observe?.(name, (performance.now() - t0) / 1000, false)
      throw new GatewayError('STORE_UNAVAILABLE', { detail: `redis ${name}: ${errText(err)}`, cause: err })
    }
  }
  /** Add to a deny list (or the rollback list) and tell every instance, in one script. */
  const deny = (zset: string, member: string, untilMs: number, message: Message): Promise<number> =>
    cmd.wgDeny(zset, member, String(untilMs), String(now()), keys.channel, JSON.stringify(message))

  const families: FamilyPort = {
    async createFamily (hash, record) {
      const k = keys.family(record.fid)
      await op('createFamily', () => cmd.wgCreate(k.meta, k.spent, hash, String(record.expiresAt), String(record.familyExpiresAt),
        record.openid, record.unionid ?? '', record.appid, String(record.createdAt)))
    },

    async rotateRefresh (input): Promise<RotateResult> {
      const k = keys.family(input.fid)
      const r = await op('rotateRefresh', () => cmd.wgRotate(k.meta, k.spent, k.grace(input.hash), input.hash, input.nextHash, input.grace,
        String(input.nowMs), String(input.refreshTtlMs), String(input.graceMs), `\t${input.appids.join('\t')}\t`))
      switch (r[0]) {
        case 'rotated': return { status: 'rotated', record: toRecord(input.fid, r) }
        case 'grace': return { status: 'grace', record: toRecord(input.fid, r), grace: r[7] }
        case 'reused': return { status: 'reused', fid: input.fid }
        case 'foreign': return { status: 'foreign', appid: r[1] }
        case 'expired': return { status: 'expired' }
        case 'revoked': return { status: 'revoked' }
        default: return { status: 'invalid' }
      }
    },

    async familyToken (fid, hash, nowMs) {
      const k = keys.family(fid)
      return await op('familyToken', () => cmd.wgHolds(k.meta, k.spent, hash, String(nowMs)))
    }
  }

  const revocations: RevocationPort = {
    async revokeFamily (fid, untilMs) {
      const k = keys.family(fid)
      await op('revokeFamily', async () => {
        await cmd.wgKill(k.meta, k.spent)
        await deny(keys.deny.fid, fid, untilMs, ['f', fid, untilMs])
      })
      mirror.revocations.addFid(fid, untilMs) // at once on this instance, whatever pub/sub does
    },

    async revokeAccessToken (jti, untilMs) {
      await op('revokeAccessToken', () => deny(keys.deny.jti, jti, untilMs, ['j', jti, untilMs]))
      mirror.revocations.addJti(jti, untilMs)
    },

    async revokeUserBefore (appId, openid, cutoffMs, untilMs) {
      const member = `${appId}\t${openid}\t${cutoffMs}`
      await op('revokeUserBefore', () => deny(keys.deny.user, member, untilMs, ['u', appId, openid, cutoffMs, untilMs]))
      mirror.revocations.addUser(appId, openid, cutoffMs, untilMs)
    },

    userCutoff: (appId, openid) => mirror.revocations.userCutoff(appId, openid),

    isRevoked (subject) {
      if (!sync.synced() && !failOpen) {
        throw new GatewayError('STORE_UNAVAILABLE', { detail: 'revocation mirror not synchronised with redis' })
      }
      return mirror.revocations.has(subject)
    }
  }

  // Login claims: one key per (appId, code) hash, value 'p:<owner>' (claimed), 'd:<outcome>'
  // (remembered) or 'r:<outcome>' (a transient failure, for the logins already waiting).
  const logins: LoginClaimPort = {
    async claimLogin (key, owner, ttlMs) {
      const r = await op('claimLogin', () => cmd.wgClaimLogin(keys.login(key), owner, ms(ttlMs)))
      if (r[0] === 'done') return { status: 'done', outcome: r[1] }
      return r[0] === 'claimed' ? { status: 'claimed' } : { status: 'pending' }
    },

    async peekLogin (key) {
      const v = await op('peekLogin', () => main.get(keys.login(key)))
      if (v === null) return { status: 'none' }
      if (v.startsWith('d:')) return { status: 'done', outcome: v.slice(2) }
      if (v.startsWith('r:')) return { status: 'failed', outcome: v.slice(2) }
      return { status: 'pending' }
    },

    async finishLogin (key, owner, outcome, remember, ttlMs) {
      const value = (remember ? 'd:' : 'r:') + outcome
      return await op('finishLogin', () => cmd.wgFinishLogin(keys.login(key), owner, value, ms(ttlMs))) === 1
    },

    async releaseLogin (key, owner) {
      await op('releaseLogin', () => cmd.wgReleaseLogin(keys.login(key), owner))
    }
  }

  return {
    kind: 'redis',

    async setSessionKey (appId, openid, sessionKey, ttlMs) {
      await op('setSessionKey', () => main.set(keys.sessionKey(appId, openid), sessionKey, 'PX', Math.max(1, Math.round(ttlMs))))
    },
    async getSessionKey (appId, openid) {
      return await op('getSessionKey', () => main.get(keys.sessionKey(appId, openid)))
    },

    ...families,
    ...revocations,
    ...logins,

    // Both kinds expire by themselves (PX): Redis needs no bound of its own here.
    async putOnce (kind, key, value, ttlMs) {
      await op('putOnce', () => main.set(keys.once(kind, key), value, 'PX', ms(ttlMs)))
    },
    async takeOnce (kind, key) {
      // GETDEL (Redis 6.2+) as a transaction: one key, one slot, atomic everywhere.
      const k = keys.once(kind, key)
      const r = await op('takeOnce', () => main.multi().get(k).del(k).exec())
      const got = r?.[0]?.[1]
      return typeof got === 'string' ? got : null
    },
    async setWeChatGrant (appId, openid, grant, ttlMs) {
      await op('setWeChatGrant', () => main.set(keys.grant(appId, openid), grant, 'PX', ms(ttlMs)))
    },
    async getWeChatGrant (appId, openid) {
      return await op('getWeChatGrant', () => main.get(keys.grant(appId, openid)))
    },

    async announceRollback (key, untilMs) {
      await op('announceRollback', () => deny(keys.deny.rollback, key, untilMs, ['r', key, untilMs]))
      mirror.addRollbacks([key])
    },
    rollbacks: () => mirror.rollbacks,
    onRollback: (listener) => mirror.onRollback(listener),

    ...createRedisRollouts(main, keys, op),

    redisConnection: () => main,

    async ping () {
      return await op('ping', async () => {
        const t0 = performance.now()
        await main.ping()
        return performance.now() - t0
      })
    },
    healthy: () => !closed && sync.synced() && sync.topologyOk() && main.status === 'ready',
    ready: (timeoutMs = 5000) => sync.ready(timeoutMs),
    async close () {
      closed = true
      sync.close()
    }
  }
}
