/**
 * Accounting: every exchange the public listener answers — an HTTP request or a
 * WebSocket handshake — is counted once in wegate_requests_total and
 * wegate_request_duration_seconds and written once as an access line, in one
 * format. An HTTP request is accounted for on its response's 'close', which
 * fires for every response: finished, or cut short (client gone, upstream broke
 * off mid-body). A handshake has no Fastify response: the WebSocket proxy
 * reports it through `record` when it is answered.
 */
import type { ServerResponse } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import { createAccessLog, protoOf, type Exchange } from './access-log.js'
import { traceContext, type TraceContext } from './trace-context.js'

export type { Exchange } from './access-log.js'
export { protoOf } from './access-log.js'

/** A TLS connection (an HTTP/1.1 request's or WebSocket handshake's socket). */
export function isTls (socket: unknown): boolean {
  return (socket as { encrypted?: boolean } | null)?.encrypted === true
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Name of the route that served this request ('' until matched). */
    routeName: string
    /** Name of the upstream chosen ('' when none). */
    upstreamName: string
    /** performance.now() when the request arrived. */
    startedAt: number
    /** The envelope code when the gateway answered with an error (0 otherwise), for the access line. */
    errorCode: number
    /** W3C trace context (http/trace-context.ts), set when the request arrives. */
    trace: TraceContext | null
  }
  interface FastifyInstance {
    accounting: Accounting
  }
}

export interface Accounting {
  /** Start accounting for an HTTP request: timed, its id returned, accounted for when its response closes. */
  track: (request: FastifyRequest, reply: FastifyReply) => void
  /** Account for an exchange that has no Fastify response. */
  record: (exchange: Exchange) => void
}

const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])
const REQUEST = Symbol('wegate.request')
type TrackedResponse = ServerResponse & { [REQUEST]?: FastifyRequest | undefined }

/** The counters and the access line, for a logger and a metrics registry; `trusted`: trustProxy for a socket peer. */
export function createAccounting (logger: Logger | undefined, metrics: Metrics, trusted: (address: string) => boolean = () => false): Accounting {
  // Without a logger: counted, not logged.
  const accessLog = logger === undefined ? () => {} : createAccessLog(logger)
  const account = (e: Exchange): void => {
    const route = e.route === '' ? 'none' : e.route
    const upstream = e.upstream === '' ? 'none' : e.upstream
    const ms = performance.now() - e.startedAt
    metrics.requests.inc({ route, upstream, method: METHODS.has(e.method) ? e.method : 'OTHER', status_class: `${Math.floor(e.status / 100)}xx` })
    metrics.requestDuration.observe({ route, upstream }, ms / 1000)
    accessLog(e, route, upstream, ms)
  }

  // Shared by every response (no closure per request): `this` is the response.
  const onResponseClose = function (this: TrackedResponse): void {
    const request = this[REQUEST]
    if (request === undefined) return
    this[REQUEST] = undefined
    account({
      reqId: request.id,
      method: request.method,
      url: request.url,
      route: request.routeName,
      upstream: request.upstreamName,
      // 499 (nginx's "client closed request"): the client left before any answer was sent.
      status: this.headersSent ? this.statusCode : 499,
      code: request.errorCode,
      startedAt: request.startedAt,
      traceId: request.trace?.traceId ?? '',
      linkedTraceId: request.trace?.linkedTraceId,
      aborted: !this.writableFinished,
      websocket: false,
      proto: protoOf(request.raw.httpVersion),
      // HTTP/2 is only served over TLS (no h2c); its socket proxy may be gone by now.
      tls: request.raw.httpVersionMajor === 2 || isTls(request.raw.socket)
    })
  }

  return {
    track (request, reply) {
      request.startedAt = performance.now()
      request.trace = traceContext(request.headers, trusted(request.socket.remoteAddress ?? ''))
      const res = reply.raw as TrackedResponse
      res[REQUEST] = request
      res.on('close', onResponseClose)
      reply.header('x-request-id', request.id)
    },
    record: account
  }
}

/** Decorates the instance with `accounting` and the request with the fields the access line reads. */
export const accountingPlugin = fp<{ logger: Logger, metrics: Metrics, trusted: (address: string) => boolean }>(async (app, opts) => {
  app.decorateRequest('routeName', '')
  app.decorateRequest('upstreamName', '')
  app.decorateRequest('startedAt', 0)
  app.decorateRequest('errorCode', 0)
  app.decorateRequest('trace', null)
  app.decorate('accounting', createAccounting(opts.logger, opts.metrics, opts.trusted))
}, { name: 'wegate-accounting', fastify: '5.x' })
