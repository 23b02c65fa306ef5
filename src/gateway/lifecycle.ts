/**
 * Graceful stop: readiness false, keep serving `shutdown.delay` (load balancers
 * notice), stop accepting, let in-flight requests finish (at most
 * `shutdown.timeout`), then app.close() — the one path that releases
 * everything the plugins opened.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'

declare module 'fastify' {
  interface FastifyInstance {
    lifecycle: Lifecycle
  }
}

export interface Lifecycle {
  /** Readiness is false, new requests are answered with `Connection: close`. */
  readonly draining: boolean
  /** Not accepting: new requests get SHUTTING_DOWN. */
  readonly closing: boolean
  /** Drain, then app.close(). Idempotent: every call returns the same promise. */
  shutdown: () => Promise<void>
}

// 50 ms: how often connections that were busy when closing began are closed once idle
const REAP_INTERVAL_MS = 50

export const lifecyclePlugin = fp<{ logger: Logger }>(async (app, { logger }) => {
  let draining = false
  let closing = false
  let stopped: Promise<void> | undefined

  const stop = async (): Promise<void> => {
    draining = true
    const { delay, timeout } = app.snapshots.current().config.shutdown
    logger.info({ delayMs: delay, timeoutMs: timeout }, 'shutting down: readiness is false, draining')
    if (delay > 0) await sleep(delay)
    closing = true
    // Past the timeout, cut whatever is still open rather than hang the rollout.
    const force = setTimeout(() => {
      logger.warn('drain timeout reached: closing remaining connections')
      app.server.closeAllConnections()
    }, timeout)
    // Connections busy when closing began go idle (keep-alive) once their
    // response is out; close them as they do, instead of waiting for the timeout.
    const reap = setInterval(() => app.server.closeIdleConnections(), REAP_INTERVAL_MS)
    try {
      await app.close()
    } finally {
      clearTimeout(force)
      clearInterval(reap)
    }
    logger.info('shutdown complete')
  }

  app.decorate('lifecycle', {
    get draining () { return draining },
    get closing () { return closing },
    shutdown: async () => { stopped ??= stop(); return await stopped }
  })
}, { name: 'wegate-lifecycle', fastify: '5.x', dependencies: ['wegate-config'] })
