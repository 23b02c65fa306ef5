/**
 * createStore: the one place that picks the Store implementation from config.
 */
import type { StoreConfig } from '../config/schema.js'
import { createMemoryStore } from './memory/index.js'
import { createRedisStore } from './redis/index.js'
import type { Store, StoreLogger, StoreOptions } from './types.js'

export type {
  AnnouncementPort, FamilyPort, HealthPort, LoginClaim, LoginClaimPort, LoginState, OnceKind, RedisConnection, RefreshRecord,
  RevocationPort, RevocationSubject, RolloutPort, RolloutRecord, RotateInput, RotateResult, SessionKeyPort, Store, StoreLogger, StoreOptions, WebLoginPort
} from './types.js'

/** Build the store named by `config.type`; Redis connects in the background (await `store.ready()`). */
export function createStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  return config.type === 'redis'
    ? createRedisStore(config, logger, opts)
    : createMemoryStore(config, logger, opts)
}
