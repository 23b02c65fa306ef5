/**
 * The local mirror of Redis' deny lists and the announcement bus: every instance
 * keeps the revocations (a RevocationSet) and the canary rollback keys in memory,
 * fed by the pub/sub channel and fully reloaded after every (re)connect, so the
 * per-request check is a synchronous Map lookup. It also holds the store's state
 * marker (`{rv}:epoch`): tokens issued before the state began are denied.
 */
import { randomBytes } from 'node:crypto'
import { RevocationSet } from '../revocation-set.js'
import type { StoreLogger } from '../types.js'
import type { RedisKeys } from './keys.js'
import type { Scripts } from './scripts.js'
import type { Cluster, Redis } from 'ioredis'

// 30 days: the state marker outlives any gap in which no gateway touches the store (an expired marker
// only counts as a loss: tokens issued before are refused, never accepted)
const EPOCH_TTL_MS = 30 * 24 * 3600_000

/** A pub/sub message: a revoked jti / fid, a rollback key, or a user's logout-all cutoff. */
export type Message = ['j', string, number] | ['f', string, number] | ['r', string, number] | ['u', string, string, number, number]

function parseMessage (raw: string): Message | null {
  let m: unknown
  try { m = JSON.parse(raw) } catch { return null }
  if (!Array.isArray(m)) return null
  if ((m[0] === 'j' || m[0] === 'f' || m[0] === 'r') && m.length === 3 && typeof m[1] === 'string' && typeof m[2] === 'number') {
    return m as Message
  }
  if (m[0] === 'u' && m.length === 5 && typeof m[1] === 'string' && typeof m[2] === 'string' &&
    typeof m[3] === 'number' && typeof m[4] === 'number') {
    return m as Message
  }
  return null
}

export interface Mirror {
  /** Redis holds the truth; this only mirrors it (and never forgets an entry early). */
  readonly revocations: RevocationSet
  /** Canary rollbacks in force (few: one per rolled-back upstream and config). */
  readonly rollbacks: ReadonlySet<string>
  onRollback (listener: (key: string) => void): void
  /** Add rollback keys, then tell the listeners about the new ones. */
  addRollbacks (keys: readonly string[]): void
  /** Apply one raw pub/sub message (malformed ones are ignored). */
  receive (raw: string): void
  /** Read (or write, when there is none) the state marker; see the module comment. */
  checkEpoch (): Promise<void>
  /** Load the marker and every deny list entry still in force; `stillValid` false drops the result. */
  reload (stillValid: () => boolean): Promise<boolean>
}

export function createMirror (opts: {
  main: (Redis | Cluster) & Scripts
  keys: RedisKeys
  now: () => number
  logger: StoreLogger
  topology: string
  onStateLost: ((since: number) => void) | undefined
}): Mirror {
  const { main, keys, now, logger, topology } = opts
  const revocations = new RevocationSet()
  const rollbacks = new Set<string>()
  const listeners: Array<(key: string) => void> = []
  // The state marker this instance last saw (null before the first look).
  let epoch: string | null = null

  const addRollbacks = (batch: readonly string[]): void => {
    // each listener sees the whole batch (a resync) in the set
    const fresh = batch.filter((key) => !rollbacks.has(key))
    for (const key of fresh) rollbacks.add(key)
    for (const key of fresh) for (const fn of listeners) fn(key)
  }

  const apply = (m: Message): void => {
    if (m[0] === 'j') revocations.addJti(m[1], m[2])
    else if (m[0] === 'f') revocations.addFid(m[1], m[2])
    else if (m[0] === 'r') addRollbacks([m[1]])
    else revocations.addUser(m[1], m[2], m[3], m[4])
  }

  /**
   * A marker this instance has not seen before, or none at all, means the store's state began
   * then: every token issued before is denied. Seen by a running instance (a Redis restarted
   * empty, a failover to an empty node), that is a loss: error log and onStateLost.
   */
  const checkEpoch = async (): Promise<void> => {
    const fresh = `${randomBytes(9).toString('base64url')}:${now()}`
    const marker = await main.wgEpoch(keys.deny.epoch, fresh, String(EPOCH_TTL_MS))
    if (marker === epoch) return
    const since = Number(marker.slice(marker.indexOf(':') + 1))
    const bornAt = Number.isFinite(since) ? since : now()
    revocations.denyIssuedBefore(bornAt)
    if (epoch !== null) {
      logger.error({ topology, since: new Date(bornAt).toISOString() },
        'redis store: the store lost its state (state marker gone or replaced); every token issued before then is refused')
      opts.onStateLost?.(bornAt)
    } else if (marker === fresh) {
      logger.warn({ topology, since: new Date(bornAt).toISOString() },
        'redis store: no state marker: a first start on this store, or one that lost its state; tokens issued before now are refused')
    }
    epoch = marker
  }

  return {
    revocations,
    rollbacks,
    onRollback: (listener) => { listeners.push(listener) },
    addRollbacks,
    receive (raw) {
      const m = parseMessage(raw)
      if (m !== null) apply(m)
    },
    checkEpoch,

    async reload (stillValid) {
      await checkEpoch()
      if (!stillValid()) return false
      const t = String(now())
      const [jtis, fids, users, rolled] = await Promise.all([
        main.zrangebyscore(keys.deny.jti, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(keys.deny.fid, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(keys.deny.user, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(keys.deny.rollback, t, '+inf')
      ])
      if (!stillValid()) return false
      addRollbacks(rolled)
      for (let i = 0; i + 1 < jtis.length; i += 2) revocations.addJti(jtis[i], Number(jtis[i + 1]))
      for (let i = 0; i + 1 < fids.length; i += 2) revocations.addFid(fids[i], Number(fids[i + 1]))
      for (let i = 0; i + 1 < users.length; i += 2) {
        const [appid, openid, cutoff] = users[i].split('\t')
        if (openid !== undefined && cutoff !== undefined) revocations.addUser(appid, openid, Number(cutoff), Number(users[i + 1]))
      }
      logger.info({ jtis: jtis.length / 2, fids: fids.length / 2, users: users.length / 2 }, 'redis store: revocation mirror synchronised')
      return true
    }
  }
}
