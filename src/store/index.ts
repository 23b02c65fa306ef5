/**
 * createStore: the one place that picks the Store implementation from config.
 */
import type { StoreConfig } from '../config/schema.js'
import { createMemoryStore } from './memory.js'
import { createRedisStore } from './redis.js'
import type { Store, StoreLogger, StoreOptions } from './types.js'

export type { LoginClaim, LoginState, RefreshRecord, RevocationSubject, RotateInput, RotateResult, Store, StoreLogger, StoreOptions } from './types.js'

/** Build the store named by `config.type`; Redis connects in the background (await `store.ready()`). */
export function createStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  return config.type === 'redis'
    ? createRedisStore(config, logger, opts)
    : createMemoryStore(config, logger, opts)
}
