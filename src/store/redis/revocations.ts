/**
 * The Redis store's RevocationPort and AnnouncementPort: a deny-list entry and
 * its pub/sub message in one script, and the local mirror updated at once on
 * this instance, whatever pub/sub does. Reads come from the mirror.
 */
import { GatewayError } from '../../errors.js'
import type { AnnouncementPort, RevocationPort } from '../types.js'
import type { RedisContext } from './context.js'

/** `failOpen`: answer from the mirror even when it is not synchronised with Redis. */
export function createRedisRevocations ({ cmd, keys, mirror, sync, op, deny }: RedisContext, failOpen: boolean): RevocationPort {
  return {
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
}

export function createRedisAnnouncements ({ keys, mirror, op, deny }: RedisContext): AnnouncementPort {
  return {
    async announceRollback (key, untilMs) {
      await op('announceRollback', () => deny(keys.deny.rollback, key, untilMs, ['r', key, untilMs]))
      mirror.addRollbacks([key])
    },
    rollbacks: () => mirror.rollbacks,
    onRollback: (listener) => mirror.onRollback(listener)
  }
}
