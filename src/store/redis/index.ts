/**
 * Redis Store: shared by every gateway instance, on a single server, a Redis
 * Cluster or behind Sentinel (connect.ts). Refresh families live under one hash
 * tag each, so every family operation is one Lua script (scripts.ts) on one slot;
 * revocations are sorted sets plus a pub/sub message each, mirrored locally by
 * every instance (mirror.ts, kept in sync by sync.ts). A login claims its
 * wx.login code under its own key, so a retry on another instance gets the same
 * answer. Every key has a TTL (keys.ts); times are ms, Lua gets `now` from us.
 * Each port is its own file (families, revocations, logins, web-logins,
 * rollouts); context.ts is what they share, this file composes them.
 */
import { performance } from 'node:perf_hooks'
import type { StoreConfig } from '../../config/schema.js'
import type { HealthPort, SessionKeyPort, Store, StoreLogger, StoreOptions } from '../types.js'
import { connect, describe } from './connect.js'
import { createOp, type RedisContext } from './context.js'
import { createRedisFamilies } from './families.js'
import { redisKeys } from './keys.js'
import { createRedisLogins } from './logins.js'
import { createMirror } from './mirror.js'
import { createRedisAnnouncements, createRedisRevocations } from './revocations.js'
import { createRedisRollouts } from './rollouts.js'
import { registerScripts } from './scripts.js'
import { startSync } from './sync.js'
import { createRedisWebLogins } from './web-logins.js'

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
  let closed = false
  const op = createOp(opts.observe, () => closed)
  const ctx: RedisContext = {
    main,
    cmd,
    keys,
    mirror,
    sync,
    now,
    op,
    deny: (zset, member, untilMs, message) =>
      cmd.wgDeny(zset, member, String(untilMs), String(now()), keys.channel, JSON.stringify(message))
  }
  const health: HealthPort = {
    ping: () => op('ping', async () => {
      const t0 = performance.now()
      await main.ping()
      return performance.now() - t0
    }),
    healthy: () => !closed && sync.synced() && sync.topologyOk() && main.status === 'ready',
    ready: (timeoutMs = 5000) => sync.ready(timeoutMs),
    async close () {
      closed = true
      sync.close()
    }
  }
  return {
    kind: 'redis',
    ...sessionKeys(ctx),
    ...createRedisFamilies(ctx),
    ...createRedisRevocations(ctx, config.failMode === 'open'),
    ...createRedisLogins(ctx),
    ...createRedisWebLogins(ctx),
    ...createRedisAnnouncements(ctx),
    ...createRedisRollouts(main, keys, op),
    redisConnection: () => main,
    ...health
  }
}

function sessionKeys ({ main, keys, op }: RedisContext): SessionKeyPort {
  return {
    async setSessionKey (appId, openid, sessionKey, ttlMs) {
      await op('setSessionKey', () => main.set(keys.sessionKey(appId, openid), sessionKey, 'PX', Math.max(1, Math.round(ttlMs))))
    },
    async getSessionKey (appId, openid) {
      return await op('getSessionKey', () => main.get(keys.sessionKey(appId, openid)))
    }
  }
}
