/**
 * The shared store as a plugin: created from the config unless the caller
 * injects one (then the caller closes it), with the `wegate_store_up` gauge
 * kept current. Everything else reads `app.store`.
 */
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { StoreConfig } from '../config/schema.js'
import type { Metrics } from '../metrics/index.js'
import { createStore, type Store } from '../store/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** Sessions, refresh families, revocations, login claims, rate limits, announcements. */
    store: Store
  }
}

export interface StorePluginOptions {
  config: StoreConfig
  logger: Logger
  metrics: Metrics
  /** Clock (ms) for every expiry the store computes. */
  now: () => number
  /** A store the caller owns (and closes); default: one created here, closed on app.close(). */
  store?: Store | undefined
}

// 1 s: how often wegate_store_up is refreshed (health changes are pushed by the store's own checks)
const STORE_UP_INTERVAL_MS = 1000

export const storePlugin = fp<StorePluginOptions>(async (app, opts) => {
  const { metrics } = opts
  const store = opts.store ?? createStore(opts.config, opts.logger.child({ component: 'store' }), {
    observe: (op, seconds) => metrics.storeDuration.observe({ op }, seconds),
    onStateLost: () => metrics.storeStateLost.inc(),
    now: opts.now
  })
  app.decorate('store', store)
  const gauge = () => metrics.storeUp.set(store.healthy() ? 1 : 0)
  gauge()
  const timer = setInterval(gauge, STORE_UP_INTERVAL_MS)
  timer.unref()
  app.addHook('onClose', async () => {
    clearInterval(timer)
    if (opts.store === undefined) await store.close()
  })
}, { name: 'wegate-store', fastify: '5.x' })
