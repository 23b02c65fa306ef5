/**
 * Automatic canary rollback (proxy/canary.ts) as a plugin: the control lives
 * as long as the app and stops its marker refresh on app.close().
 */
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import { createCanaryControl, type CanaryControl } from '../proxy/canary.js'

declare module 'fastify' {
  interface FastifyInstance {
    canary: CanaryControl
  }
}

export const canaryPlugin = fp<{ metrics: Metrics, logger: Logger }>(async (app, opts) => {
  const canary = createCanaryControl({ store: app.store, metrics: opts.metrics, logger: opts.logger })
  app.decorate('canary', canary)
  app.addHook('onClose', async () => { canary.close() })
}, { name: 'wegate-canary', fastify: '5.x', dependencies: ['wegate-store'] })
