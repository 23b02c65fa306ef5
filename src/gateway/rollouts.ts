/**
 * Automatic ramps (proxy/rollout.ts) as a plugin: the control lives as long as
 * the app, ticks in the background and hands its leases on at app.close().
 * `registerRolloutAdmin` adds the SRE's endpoints to the admin server, behind
 * admin.apiToken like the access_token endpoints (absent without one):
 * GET /rollouts, POST /rollouts/<route>/pause|resume|promote|abort.
 */
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { ok } from '../errors.js'
import type { Metrics } from '../metrics/index.js'
import type { RampCommand } from '../proxy/ramp.js'
import { createRolloutControl, type RolloutControl } from '../proxy/rollout.js'
import { adminTokenGuard } from '../wechat/admin-routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    rollouts: RolloutControl
  }
}

export const rolloutsPlugin = fp<{ metrics: Metrics, logger: Logger, now: () => number, tickMs?: number | undefined }>(async (app, opts) => {
  const rollouts = createRolloutControl({ store: app.store, metrics: opts.metrics, logger: opts.logger, now: opts.now, tickMs: opts.tickMs })
  app.decorate('rollouts', rollouts)
  app.addHook('onClose', async () => { await rollouts.close() })
}, { name: 'wegate-rollouts', fastify: '5.x', dependencies: ['wegate-store'] })

const commandSchema = {
  params: {
    type: 'object',
    required: ['route', 'command'],
    properties: { route: { type: 'string', minLength: 1, maxLength: 63 }, command: { type: 'string', enum: ['pause', 'resume', 'promote', 'abort'] } }
  }
} as const

export function registerRolloutAdmin (admin: FastifyInstance, opts: { apiToken: string | undefined, rollouts: RolloutControl }): void {
  if (opts.apiToken === undefined) return
  const guard = adminTokenGuard(opts.apiToken)
  admin.get('/rollouts', { onRequest: guard }, async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok({ rollouts: await opts.rollouts.status() })
  })
  admin.post<{ Params: { route: string, command: RampCommand } }>('/rollouts/:route/:command', { schema: commandSchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.rollouts.command(request.params.route, request.params.command))
  })
}
