/**
 * `workers: N`: the admin endpoints that belong to the gateway itself rather than to
 * the process group — the automatic ramps (GET /rollouts, POST
 * /rollouts/<route>/<command>) and the OpenAPI document (GET /openapi.json) — are relayed by the primary to one ready worker
 * over the cluster's IPC channel. The worker answers them with its own admin
 * instance (`inject`, never listening), so the token guard, the schema, the errors
 * and the ramp control are the single-process ones, and the worker's config
 * (reloaded with the group's) decides which ramp is current.
 */
import type { Worker } from 'node:cluster'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import { sendError } from '../http/errors.js'

/** The primary asks a worker. */
export interface AdminRelayRequest { type: 'wegate:admin', id: number, method: 'GET' | 'POST', url: string, authorization: string | undefined }
/** The worker's answer, as its admin instance gave it. */
export interface AdminRelayReply { type: 'wegate:admin-reply', id: number, status: number, headers: Record<string, string>, body: string }

// 10 s: a worker that has not answered by then is stuck or gone (the ramp commands take a few store round trips)
const RELAY_TIMEOUT_MS = 10_000
/** The answer's headers passed on (the rest are the worker's transport's). */
const PASSED = ['content-type', 'cache-control', 'retry-after']

export interface AdminRelay {
  /** Hand a worker's reply to the request waiting for it. */
  answer: (reply: AdminRelayReply) => void
  /** Fail the requests relayed to a worker that exited. */
  lost: (workerId: number) => void
}

/**
 * Serve `paths` on the primary's admin instance by relaying them to `pick()`'s worker
 * (undefined: none ready → 503 WORKERS_UNAVAILABLE).
 */
export function relayAdmin (admin: FastifyInstance, paths: readonly string[], pick: () => Worker | undefined, logger: Logger): AdminRelay {
  let nextId = 0
  const waiting = new Map<number, { worker: number, done: (r: AdminRelayReply | undefined) => void }>()
  const ask = (worker: Worker, req: AdminRelayRequest): Promise<AdminRelayReply | undefined> => new Promise((resolve) => {
    const timer = setTimeout(() => { waiting.delete(req.id); resolve(undefined) }, RELAY_TIMEOUT_MS)
    waiting.set(req.id, { worker: worker.id, done: (r) => { clearTimeout(timer); waiting.delete(req.id); resolve(r) } })
    worker.send(req, (err) => { if (err !== null) waiting.get(req.id)?.done(undefined) })
  })
  for (const url of paths) {
    admin.route({
      method: ['GET', 'POST'],
      url,
      handler: async (request, reply) => {
        const worker = pick()
        const answer = worker === undefined
          ? undefined
          : await ask(worker, { type: 'wegate:admin', id: ++nextId, method: request.method as 'GET' | 'POST', url: request.url, authorization: request.headers.authorization })
        if (answer === undefined) {
          logger.warn({ path: request.url.split('?')[0], worker: worker?.id }, 'admin relay: no worker answered')
          return sendError(reply, new GatewayError('WORKERS_UNAVAILABLE'))
        }
        reply.code(answer.status).headers(answer.headers)
        return reply.send(answer.body)
      }
    })
  }
  return {
    answer: (r) => { waiting.get(r.id)?.done(r.status === 0 ? undefined : r) },
    lost: (workerId) => { for (const w of [...waiting.values()]) if (w.worker === workerId) w.done(undefined) }
  }
}

/** In a worker: answer the primary's relayed admin requests with `admin.inject`. */
export function answerAdminRelay (admin: FastifyInstance, logger: Logger): () => void {
  const onMessage = (m: { type?: unknown }): void => {
    if (m?.type !== 'wegate:admin') return
    const req = m as AdminRelayRequest
    const send = (reply: AdminRelayReply): void => { if (process.connected) process.send?.(reply) }
    admin.inject({ method: req.method, url: req.url, headers: req.authorization === undefined ? {} : { authorization: req.authorization } }).then((res) => {
      const headers: Record<string, string> = {}
      for (const h of PASSED) {
        const v = res.headers[h]
        if (v !== undefined) headers[h] = String(v)
      }
      send({ type: 'wegate:admin-reply', id: req.id, status: res.statusCode, headers, body: res.body })
    }, (err: unknown) => {
      // the admin instance is closing (the worker drains): status 0 tells the primary to answer 503
      logger.warn({ err }, 'admin relay: could not answer the primary')
      send({ type: 'wegate:admin-reply', id: req.id, status: 0, headers: {}, body: '' })
    })
  }
  process.on('message', onMessage)
  return () => { process.off('message', onMessage) }
}
