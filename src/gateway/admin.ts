/**
 * The admin listener: /healthz, /readyz and /metrics, nothing else. One module
 * for the single process (the plugin below) and the workers' primary
 * (cli/cluster.ts): each passes what it knows about its health, readiness and metrics.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import { handleError, sendError } from '../http/errors.js'
import type { Metrics } from '../metrics/index.js'

declare module 'fastify' {
  interface FastifyInstance {
    admin: {
      /** The admin Fastify instance (listens only when the caller asks it to). */
      server: FastifyInstance
      /** Ready: config loaded, store reachable, not draining. */
      ready: () => boolean
    }
  }
}

export interface AdminProbes {
  /** The /healthz body (the process is alive: always 200). */
  health: () => Record<string, unknown>
  /** Readiness and the /readyz body: 200 when `ready`, else 503. */
  readiness: () => { ready: boolean, body: Record<string, unknown> }
  /** The Prometheus exposition and its content type. */
  metrics: () => Promise<{ contentType: string, text: string }>
}

/** An admin Fastify instance (not listening). */
export function createAdminServer (logger: Logger, probes: AdminProbes): FastifyInstance {
  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true })
  })
  admin.setErrorHandler(handleError)
  admin.setNotFoundHandler((_request, reply) => sendError(reply, new GatewayError('NO_ROUTE')))
  admin.get('/healthz', async () => probes.health())
  admin.get('/readyz', async (_request, reply) => {
    const { ready, body } = probes.readiness()
    reply.code(ready ? 200 : 503)
    return { ready, ...body }
  })
  admin.get('/metrics', async (_request, reply) => {
    const { contentType, text } = await probes.metrics()
    reply.header('content-type', contentType)
    return text
  })
  return admin
}

/** The gateway's admin server, closed on app.close() after the public listener. */
export const adminPlugin = fp<{ metrics: Metrics, logger: Logger }>(async (app, { metrics, logger }) => {
  const { store, lifecycle, snapshots } = app
  const ready = () => !lifecycle.draining && store.healthy()
  const server = createAdminServer(logger, {
    health: () => ({ status: 'ok' }),
    readiness: () => ({ ready: ready(), body: { draining: lifecycle.draining, store: store.healthy() ? 'up' : 'down', config: snapshots.current().hash } }),
    metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.registry.metrics() })
  })
  app.decorate('admin', { server, ready })
  app.addHook('onClose', async () => { await server.close() })
}, { name: 'wegate-admin', fastify: '5.x', dependencies: ['wegate-store', 'wegate-config', 'wegate-lifecycle'] })
