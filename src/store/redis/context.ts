/** What the Redis store's ports share: the connection, its scripts, the keys, the mirror and the one way to run an operation. */
import { performance } from 'node:perf_hooks'
import type { Cluster, Redis } from 'ioredis'
import { GatewayError } from '../../errors.js'
import type { StoreOptions } from '../types.js'
import { errText } from './connect.js'
import type { RedisKeys } from './keys.js'
import type { Message, Mirror } from './mirror.js'
import type { Scripts } from './scripts.js'
import type { Sync } from './sync.js'

/** Run one Redis operation; any failure becomes STORE_UNAVAILABLE (the cause is for the log only). */
export type Op = <T>(name: string, fn: () => Promise<T>) => Promise<T>

export interface RedisContext {
  main: Redis | Cluster
  cmd: (Redis | Cluster) & Scripts
  keys: RedisKeys
  mirror: Mirror
  sync: Sync
  now: () => number
  op: Op
  /** Add to a deny list (or the rollback list) and tell every instance, in one script. */
  deny: (zset: string, member: string, untilMs: number, message: Message) => Promise<number>
}

/** A TTL for PX: whole ms, at least 1. */
export const ms = (n: number) => String(Math.max(1, Math.round(n)))

/** The store's `op`: refused once closed, timed for `observe`, failures as STORE_UNAVAILABLE. */
export function createOp (observe: StoreOptions['observe'], isClosed: () => boolean): Op {
  return async (name, fn) => {
    if (isClosed()) throw new GatewayError('STORE_UNAVAILABLE', { detail: 'redis store is closed' })
    const t0 = performance.now()
    try {
      const v = await fn()
      observe?.(name, (performance.now() - t0) / 1000, true)
      return v
    } catch (err) {
      observe?.(name, (performance.now() - t0) / 1000, false)
      throw new GatewayError('STORE_UNAVAILABLE', { detail: `redis ${name}: ${errText(err)}`, cause: err })
    }
  }
}
