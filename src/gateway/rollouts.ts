/**
 * Automatic ramps (proxy/rollout.ts) as a plugin: the control lives as long as
 * the app, ticks in the background and hands its leases on at app.close().
 * `registerRolloutAdmin` adds the SRE's endpoints to the admin server, behind
 * admin.apiToken like the access_token endpoints (absent without one):
 * GET /rollouts, POST /rollouts/<route>/pause|resume|promote|abort.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { ok } from '../errors.js'
import { envelope, errorResponses } from '../http/schemas.js'
import type { Metrics } from '../metrics/index.js'
import type { RampCommand } from '../proxy/ramp.js'
import { createRolloutControl, type RolloutControl } from '../proxy/rollout.js'
import { ADMIN_ERRORS, adminTokenGuard } from '../wechat/admin-routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    rollouts: RolloutControl
  }
}

export const rolloutsPlugin = fp<{ metrics: Metrics, logger: Logger, now: () => number, tickMs?: number | undefined }>(async (app, opts) => {
  const rollouts = createRolloutControl({ store: app.store, metrics: opts.metrics, logger: opts.logger, now: opts.now, tickMs: opts.tickMs })
  app.decorate('rollouts', rollouts)
  // A store still connecting when the config was installed (Redis): join the ramps as soon as it is up.
  app.addHook('onReady', async () => {
    app.store.ready(30_000).then(async () => { await rollouts.tick() }, () => {})
  })
  app.addHook('onClose', async () => { await rollouts.close() })
}, { name: 'wegate-rollouts', fastify: '5.x', dependencies: ['wegate-store'] })

/** Tag of these endpoints (gateway/openapi.ts describes it). */
export const TAG_ROLLOUTS = 'Admin: rollouts'
const ADMIN_TOKEN = [{ adminToken: [] }]

const side = Type.Object({
  requests: Type.Integer(),
  errors: Type.Integer(),
  errorRate: Type.Number(),
  p99: Type.Optional(Type.Number({ description: 'ms; absent without samples' }))
})
/** One ramp as proxy/rollout.ts RolloutStatus reports it, properties in its order. */
const rolloutStatus = Type.Object({
  route: Type.String(),
  state: Type.Union([Type.Literal('running'), Type.Literal('paused'), Type.Literal('aborted'), Type.Literal('promoted')]),
  step: Type.Integer({ minimum: 1, description: '1-based step number' }),
  steps: Type.Integer({ description: 'Number of steps' }),
  share: Type.Number({ description: 'The canary\'s share of the traffic now (0..1)' }),
  reason: Type.String({ description: 'Why the ramp is in this state (the last decision or command)' }),
  inStep: Type.Integer({ description: 'Time in the current step (ms)' }),
  analysis: Type.Object({
    canary: side,
    stable: side,
    latencyRatio: Type.Optional(Type.Number({ description: 'canary p99 / stable p99; absent without both' })),
    elapsed: Type.Integer({ description: 'Time in the step judged (ms)' })
  }, { description: 'The numbers of the current step (a finished ramp: of its last decision)' }),
  current: Type.Boolean({ description: 'False when the stored ramp belongs to another version of the config file' })
})

const listSchema = {
  tags: [TAG_ROLLOUTS],
  operationId: 'listRollouts',
  summary: 'Every automatic ramp (canary.ramp) and its state',
  description: 'What `wegate rollout status` shows. Exists only when `admin.apiToken` is set. ' +
    'With `workers:`, the primary asks a ready worker (50032 when none is).',
  security: ADMIN_TOKEN,
  response: {
    200: envelope(Type.Object({ rollouts: Type.Array(rolloutStatus) }), 'The ramps of the routes that have one'),
    ...errorResponses(ADMIN_ERRORS, 'STORE_UNAVAILABLE', 'WORKERS_UNAVAILABLE')
  }
} as const

const commandSchema = {
  tags: [TAG_ROLLOUTS],
  operationId: 'rolloutCommand',
  summary: 'Pause, resume, promote or abort a route\'s ramp',
  description: 'What `wegate rollout pause|resume|promote|abort <route>` sends. Shared by every instance through the store. ' +
    'Exists only when `admin.apiToken` is set. With `workers:`, the primary asks a ready worker (50032 when none is).',
  security: ADMIN_TOKEN,
  params: {
    type: 'object',
    required: ['route', 'command'],
    properties: {
      route: { type: 'string', minLength: 1, maxLength: 63, description: 'The route\'s name' },
      command: { type: 'string', enum: ['pause', 'resume', 'promote', 'abort'] }
    }
  },
  response: {
    200: envelope(rolloutStatus, 'The ramp after the command'),
    ...errorResponses(ADMIN_ERRORS, 'ROLLOUT_UNKNOWN', 'ROLLOUT_CONFLICT', 'STORE_UNAVAILABLE', 'WORKERS_UNAVAILABLE')
  }
} as const

export function registerRolloutAdmin (admin: FastifyInstance, opts: { apiToken: string | undefined, rollouts: RolloutControl }): void {
  if (opts.apiToken === undefined) return
  const guard = adminTokenGuard(opts.apiToken)
  admin.get('/rollouts', { schema: listSchema, onRequest: guard }, async (_request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok({ rollouts: await opts.rollouts.status() })
  })
  admin.post<{ Params: { route: string, command: RampCommand } }>('/rollouts/:route/:command', { schema: commandSchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.rollouts.command(request.params.route, request.params.command))
  })
}
