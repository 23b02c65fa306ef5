/**
 * The admin listener: /healthz, /readyz and /metrics, nothing else. One module
 * for the single process (the plugin below) and the workers' primary
 * (cli/cluster.ts): each passes what it knows about its health, readiness and metrics.
 */
import { Type } from '@sinclair/typebox'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import { handleError, sendError } from '../http/errors.js'
import { describeRoutes } from '../http/schemas.js'
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

/** Tags of the admin API (gateway/openapi.ts describes them). */
export const TAG_ADMIN = 'Admin: probes and metrics'
/** The admin API token (`admin.apiToken`), as an operation's `security`. */
export const ADMIN_TOKEN = [{ adminToken: [] }]

const readiness = Type.Object({
  ready: Type.Boolean(),
  draining: Type.Boolean({ description: 'True once SIGTERM was received' }),
  store: Type.Optional(Type.Union([Type.Literal('up'), Type.Literal('down')])),
  workers: Type.Optional(Type.Object({ configured: Type.Integer(), ready: Type.Integer() }, { description: 'With `workers:` (the primary answers)' })),
  config: Type.String({ description: 'Hash of the config being served (wegate_config_info)' })
})

const healthSchema = {
  tags: [TAG_ADMIN],
  operationId: 'healthz',
  summary: 'Liveness: the process answers',
  security: [],
  response: {
    200: Type.Object({ status: Type.Literal('ok'), workers: Type.Optional(Type.Integer({ description: 'With `workers:`: workers alive' })) }, { description: 'Alive' })
  }
} as const

const readySchema = {
  tags: [TAG_ADMIN],
  operationId: 'readyz',
  summary: 'Readiness: config loaded, store reachable, not draining',
  description: 'The Kubernetes readiness probe. Not in the envelope.',
  security: [],
  response: {
    200: { ...readiness, description: 'Ready' },
    503: { ...readiness, description: 'Not ready (draining, store down, or workers missing)' }
  }
} as const

const metricsSchema = {
  tags: [TAG_ADMIN],
  operationId: 'metrics',
  summary: 'Prometheus metrics (text exposition format)',
  description: 'Every metric is listed in docs/operations.md.',
  security: [],
  response: {
    200: { description: 'The exposition, `text/plain; version=0.0.4`', content: { 'text/plain': { schema: { type: 'string' } } } }
  }
} as const

/** An admin Fastify instance (not listening), its routes described for OpenAPI (gateway/openapi.ts). */
export async function createAdminServer (logger: Logger, probes: AdminProbes): Promise<FastifyInstance> {
  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true })
  })
  await describeRoutes(admin)
  admin.setErrorHandler(handleError)
  admin.setNotFoundHandler((_request, reply) => sendError(reply, new GatewayError('NO_ROUTE')))
  admin.get('/healthz', { schema: healthSchema }, async () => probes.health())
  admin.get('/readyz', { schema: readySchema }, async (_request, reply) => {
    const { ready, body } = probes.readiness()
    reply.code(ready ? 200 : 503)
    return { ready, ...body }
  })
  admin.get('/metrics', { schema: metricsSchema }, async (_request, reply) => {
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
  const server = await createAdminServer(logger, {
    health: () => ({ status: 'ok' }),
    readiness: () => ({ ready: ready(), body: { draining: lifecycle.draining, store: store.healthy() ? 'up' : 'down', config: snapshots.current().hash } }),
    metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.registry.metrics() })
  })
  app.decorate('admin', { server, ready })
  app.addHook('onClose', async () => { await server.close() })
}, { name: 'wegate-admin', fastify: '5.x', dependencies: ['wegate-store', 'wegate-config', 'wegate-lifecycle'] })
