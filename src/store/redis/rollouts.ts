/**
 * The Redis store's RolloutPort: a route's record, lease and window reports
 * share one hash tag (one slot), so the compare-and-set and the lease are one
 * script each.
 */
import type { Cluster, Redis } from 'ioredis'
import type { RolloutPort } from '../types.js'
import { ms, type Op } from './context.js'
import type { RedisKeys } from './keys.js'

// KEYS: record. ARGV: expected version, value, ttl ms. Returns 1 when written.
const PUT_LUA = `
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'v', tostring(v + 1), 'value', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`

// KEYS: lease. ARGV: holder, ttl ms. Returns 1 when the holder holds it now.
const LEASE_LUA = `
local h = redis.call('GET', KEYS[1])
if h and h ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1`

export function createRedisRollouts (main: Redis | Cluster, keys: RedisKeys, op: Op): RolloutPort {
  return {
    async getRollout (route) {
      const r = await op('getRollout', () => main.hmget(keys.rollout(route).record, 'v', 'value'))
      const [v, value] = r
      return v === null || value === null ? null : { version: Number(v), value }
    },
    async putRollout (route, expected, value, ttlMs) {
      const r = await op('putRollout', () => main.eval(PUT_LUA, 1, keys.rollout(route).record, String(expected), value, ms(ttlMs)))
      return r === 1
    },
    async leaseRollout (route, holder, ttlMs) {
      const r = await op('leaseRollout', () => main.eval(LEASE_LUA, 1, keys.rollout(route).lease, holder, ms(ttlMs)))
      return r === 1
    },
    async reportRollout (route, window, instance, counts, ttlMs) {
      const key = keys.rollout(route).window(window)
      await op('reportRollout', () => main.multi().hset(key, instance, counts).pexpire(key, ms(ttlMs)).exec())
    },
    async rolloutReports (route, window) {
      return Object.values(await op('rolloutReports', () => main.hgetall(keys.rollout(route).window(window))))
    }
  }
}
