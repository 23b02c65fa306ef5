/**
 * The data path for every non-/auth request: the pipeline (resolve.ts) gives the
 * route, caller, upstream and upstream headers; here the body is checked against
 * the route's limit and forwarded over the keep-alive upstream Agent with bodies
 * streamed both ways, and transport failures are translated at this boundary
 * (refused/reset → 502, no headers in time → 504). Upstream answers, 4xx/5xx
 * included, pass untouched.
 *
 * undici directly rather than @fastify/reply-from: reply-from builds a URL and a
 * JSON cache key per request and copies headers twice; here the per-request work
 * is one header pass and one pool lookup (docs/performance.md has the figures).
 */
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
import { Transform, type TransformCallback } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { errors as undiciErrors, type Dispatcher } from 'undici'
import { GatewayError } from '../errors.js'
import { dropUpstreamCors, mergeVary } from '../http/cors.js'
import type { RouteLimiter } from '../http/ratelimit.js'
import type { Metrics } from '../metrics/index.js'
import { clientResponseHeaders } from './headers.js'
import { resolve, type PhoneLookup, type Pipeline, type Resolved } from './resolve.js'
import type { CompiledRoute, CompiledUpstream } from './routes.js'
import { errorKind } from './transport-errors.js'
import type { ProxySnapshot, UpstreamOutcome } from './types.js'

export interface ProxyOptions {
  snapshot: () => ProxySnapshot
  /** Keep-alive connections to every upstream origin (an undici Agent). */
  upstreams: Dispatcher
  metrics: Metrics
  /** Is this socket peer a trusted proxy (trustProxy)? */
  trusted: (address: string) => boolean
  /** Called once per forwarded request with the upstream's outcome (5xx, refused, timeout → error). */
  onOutcome?: (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome, ms?: number) => void
  /** The per-route rate limiter (shared with WebSocket upgrades), run for routes with `rateLimit`. */
  rateLimit?: RouteLimiter | undefined
  /** The caller's verified phone number for `injectPhone` routes (see resolve.ts). */
  phoneOf?: PhoneLookup | undefined
}

/** Register the catch-all proxy route (in its own encapsulated context: raw bodies, no parsing). */
export async function proxyPlugin (app: FastifyInstance, opts: ProxyOptions): Promise<void> {
  const { upstreams, metrics, onOutcome } = opts
  const pipeline: Pipeline = { snapshot: opts.snapshot, trusted: opts.trusted, rateLimit: opts.rateLimit, phoneOf: opts.phoneOf }

  // Bodies are streamed to the upstream as they arrive: never parsed, never buffered.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_request, _payload, done) => { done(null) })
  const env: ForwardEnv = { metrics, onOutcome }

  const handler = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const planned = resolve(pipeline, request)
    const r: Resolved = planned instanceof Promise ? await planned : planned
    if (r.rateHeaders !== undefined) reply.headers(r.rateHeaders)
    const { route, upstream } = r

    const raw = request.raw
    const limit = route.config.bodyLimit
    const length = raw.headers['content-length']
    if (length !== undefined && Number(length) > limit) throw new GatewayError('BODY_TOO_LARGE')
    // HTTP/2 has no Transfer-Encoding: a body of unannounced length is one whose HEADERS frame did not end the stream.
    const chunked = raw.headers['transfer-encoding'] !== undefined ||
      (length === undefined && raw.httpVersionMajor === 2 && (raw as H2Raw).stream?.endAfterHeaders === false)
    const body = chunked ? limitedBody(raw, limit) : (length !== undefined && length !== '0' ? raw : null)
    request.upstreamName = upstream.name

    // Settles when the upstream's headers are relayed (the reply is then ours, hijacked) or
    // with the 502/504/413 GatewayError the error handler renders, if they never come.
    return await new Promise<void>((resolve, reject) => {
      upstreams.dispatch({
        origin: upstream.origin,
        method: request.method as Dispatcher.HttpMethod,
        path: r.path,
        headers: r.upstreamHeaders,
        body,
        headersTimeout: route.config.timeout,
        bodyTimeout: route.config.timeout
      }, new Forwarding(reply, route, upstream, env, resolve, reject))
    })
  }

  app.route({ method: ALL_METHODS, url: '/', handler })
  app.route({ method: ALL_METHODS, url: '/*', handler })
}

/** The HTTP/2 request's stream (Fastify hands us Node's Http2ServerRequest as `request.raw`). */
type H2Raw = IncomingMessage & { stream?: { endAfterHeaders: boolean } }

const ALL_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']

class BodyTooLarge extends Error {}

interface ForwardEnv {
  metrics: Metrics
  onOutcome: ProxyOptions['onOutcome']
}

const FORWARDING = Symbol('wegate.forwarding')
type ClientResponse = ServerResponse & { [FORWARDING]?: Forwarding }

/** 'close' on the client response, shared by every request: the client left before the end. */
function onClientClose (this: ClientResponse): void {
  if (!this.writableFinished) this[FORWARDING]?.clientGone()
}

/**
 * One forwarded request as an undici dispatch handler: the upstream's status and
 * headers are written to the client response as they arrive and every body chunk
 * is written straight through (with backpressure), with no intermediate Readable,
 * pipe or end-of-stream bookkeeping per request. The outcome (for rollback and
 * metrics) is known only at the end: a reset in the middle of a body is an error.
 */
class Forwarding implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined
  private readonly started = performance.now()
  private status = 0
  /** Time to the upstream's response headers (ms), for the ramp's latency analysis. */
  private headersMs = 0
  private gone = false
  /** The route's timeout passed while the request still waited for a pooled connection: answered 504. */
  private queuedOut = false
  private readonly deadline: NodeJS.Timeout
  private readonly res: ClientResponse

  constructor (
    private readonly reply: FastifyReply,
    private readonly route: CompiledRoute,
    private readonly upstream: CompiledUpstream,
    private readonly env: ForwardEnv,
    private readonly resolve: () => void,
    private readonly reject: (err: GatewayError) => void
  ) {
    this.res = reply.raw
    this.res[FORWARDING] = this
    this.res.on('close', onClientClose)
    // Gone already (during the rate-limit round trip, or a pipelined request on a closed
    // socket): 'close' will not fire again, so do not start the upstream request at all.
    if (this.res.destroyed || reply.request.raw.socket.destroyed) this.gone = true
    // undici's headersTimeout starts when the request is written to a connection, not while it
    // waits in the pool's queue: this bounds the queueing by the route's timeout too.
    this.deadline = setTimeout(() => this.timedOut(), route.config.timeout).unref()
  }

  /** The route's timeout passed before a pooled connection took the request (onRequestStart clears it). */
  private timedOut (): void {
    if (this.status !== 0 || this.gone) return
    // Still queued (every connection to the origin busy): answer now; when a connection frees
    // up, onRequestStart aborts the request before anything is written.
    this.queuedOut = true
    const { route, upstream, env } = this
    env.metrics.upstreamErrors.inc({ route: route.name, upstream: upstream.name, kind: 'timeout' })
    env.onOutcome?.(route, upstream, 'error', performance.now() - this.started)
    this.reject(new GatewayError('UPSTREAM_TIMEOUT', { detail: `upstream ${route.name}/${upstream.name} timeout waiting for a connection` }))
  }

  /** The client went away: stop the upstream request too (its pooled connection is freed). */
  clientGone (): void {
    this.gone = true
    this.controller?.abort(new undiciErrors.RequestAbortedError())
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.gone || this.queuedOut) {
      controller.abort(new undiciErrors.RequestAbortedError())
      return
    }
    // On a connection: from here undici's headersTimeout (the route's timeout) runs, and it
    // does not fire while the client's body is still being sent — a slow upload is not an
    // upstream timeout (nor a canary error), however long it takes within the body limits.
    clearTimeout(this.deadline)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return // 1xx informational: the final answer follows
    clearTimeout(this.deadline)
    const { route, upstream, reply } = this
    this.headersMs = performance.now() - this.started
    this.env.metrics.upstreamDuration.observe({ route: route.name, upstream: upstream.name }, this.headersMs / 1000)
    const out = clientResponseHeaders(headers)
    // Under a CORS policy the gateway's Access-Control-* headers are the only ones (http/cors.ts).
    if (reply.request.corsApplied) dropUpstreamCors(out)
    // What the gateway set on the reply (X-Request-Id, RateLimit-*, CORS, Connection: close while draining) wins;
    // Vary is merged (the upstream's Accept-Encoding and the gateway's Origin both matter to caches).
    const own = reply.getHeaders()
    for (const name in own) {
      const v = own[name]
      if (v === undefined) continue
      const value = typeof v === 'number' ? String(v) : v
      const theirs = out[name]
      out[name] = name === 'vary' && theirs !== undefined && typeof value === 'string' ? mergeVary(theirs, value) : value
    }
    reply.hijack()
    try {
      this.res.writeHead(statusCode, out)
    } catch (err) {
      // Node refused a header undici let through: nothing was sent; drop the connection.
      this.gone = true
      controller.abort(err as Error)
      this.res.destroy()
      this.resolve()
      return
    }
    this.status = statusCode
    this.resolve()
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.res.destroyed) {
      this.clientGone()
      return
    }
    if (!this.res.write(chunk)) {
      controller.pause()
      // A client that stops reading must not hold the upstream connection for ever: undici's
      // body timeout does not run while paused, so the route's timeout applies to the drain.
      const timer = setTimeout(() => { this.clientGone(); this.res.destroy() }, this.route.config.timeout).unref()
      this.res.once('drain', () => { clearTimeout(timer); controller.resume() })
    }
  }

  onResponseEnd (): void {
    this.res.end()
    this.env.onOutcome?.(this.route, this.upstream, this.status >= 500 ? 'error' : 'ok', this.headersMs)
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    clearTimeout(this.deadline)
    if (this.queuedOut) return // answered (504) and counted when the deadline passed
    const { route, upstream, env } = this
    if (err instanceof BodyTooLarge || (err as { cause?: unknown }).cause instanceof BodyTooLarge) {
      // The client's oversized upload: never an upstream failure, whenever it is noticed.
      if (this.status === 0) this.reject(new GatewayError('BODY_TOO_LARGE'))
      else this.res.destroy()
      return
    }
    const kind = this.gone ? 'client_abort' : errorKind(err)
    env.metrics.upstreamErrors.inc({ route: route.name, upstream: upstream.name, kind })
    // A client that went away says nothing about the upstream: not a rollback signal.
    if (kind !== 'client_abort') env.onOutcome?.(route, upstream, 'error', performance.now() - this.started)
    if (this.status === 0 && this.res.headersSent) {
      // The gateway answered the client itself meanwhile (an HTTP/2 request timeout's 408).
      this.resolve()
      return
    }
    if (this.status !== 0) {
      // Mid-body: the client must not take a truncated answer for a whole one.
      this.res.destroy()
      return
    }
    if (kind === 'client_abort') {
      this.reject(new GatewayError('BAD_REQUEST', { detail: 'client aborted the request' }))
      return
    }
    this.reject(new GatewayError(kind === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE', {
      detail: `upstream ${route.name}/${upstream.name} ${kind}`,
      cause: err
    }))
  }
}

/**
 * The chunked body through a BodyLimit. `pipe` alone would leave the limiter
 * open when the client goes away mid-upload, and the upstream request (and its
 * pooled connection) waiting for the rest forever; so a client abort ends it
 * with an error. Not `pipeline`: a limiter error must not destroy the client
 * socket before the 413 is written.
 */
function limitedBody (raw: IncomingMessage, limit: number): BodyLimit {
  const limiter = new BodyLimit(limit)
  const cut = (): void => { limiter.destroy(Object.assign(new Error('client aborted the request body'), { code: 'ERR_STREAM_PREMATURE_CLOSE' })) }
  // HTTP/2 (Node's compatibility API) ends a request whose stream was reset as if its body
  // were complete, and sets `complete`: a reset before our response is 'aborted'.
  raw.once('aborted', cut)
  raw.once('close', () => { if (!raw.readableEnded) cut() })
  return raw.pipe(limiter)
}

/** Counts a chunked body on its way through; past the limit the upstream request is aborted (413). */
class BodyLimit extends Transform {
  private seen = 0
  constructor (private readonly limit: number) { super() }
  override _transform (chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.length
    if (this.seen > this.limit) cb(new BodyTooLarge('body too large'))
    else cb(null, chunk)
  }
}
