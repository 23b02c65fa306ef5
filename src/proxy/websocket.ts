/**
 * WebSocket proxying: the public server's `upgrade` event. A handshake goes
 * through the same pipeline as an HTTP request (resolve.ts: path normalisation,
 * route match, authentication — `wx.connectSocket` can send an Authorization
 * header — the route's rate limit, the picker, identity headers set from the
 * token and client copies stripped), takes a place among the open tunnels
 * (tunnels.ts: limits, idle timeout, token lifetime), then is replayed to the
 * chosen upstream; once it answers 101, bytes are relayed both ways unparsed.
 * Anything the gateway refuses is an envelope on the raw socket, then close.
 * Every handshake is accounted for like an HTTP request (one access-line format).
 */
import { STATUS_CODES, request as httpRequest, type ClientRequest, type IncomingMessage, type Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import proxyAddr from '@fastify/proxy-addr'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import { createAccounting, isTls, type Accounting } from '../http/accounting.js'
import type { RouteLimiter } from '../http/ratelimit.js'
import { writeRawEnvelope } from '../http/raw-envelope.js'
import { traceContext } from '../http/trace-context.js'
import { requestId as defaultRequestId } from '../http/request-id.js'
import type { Metrics } from '../metrics/index.js'
import { resolve, type PhoneLookup, type Pipeline, type PipelineInput, type Resolved } from './resolve.js'
import type { CompiledRoute, CompiledUpstream } from './routes.js'
import { setsLoginCookie } from './headers.js'
import { errorKind } from './transport-errors.js'
import { createTunnels, type Reservation, type Tunnels } from './tunnels.js'
import type { ProxySnapshot, UpstreamOutcome } from './types.js'

export interface WebSocketProxyOptions {
  snapshot: () => ProxySnapshot
  metrics: Metrics
  /** Is this socket peer a trusted proxy (trustProxy)? */
  trusted: (address: string) => boolean
  /** Error and tunnel lines go here; default: not logged. */
  logger?: Logger | undefined
  /** Where handshakes are accounted for (the gateway's); default: one on `metrics` and `logger`. */
  accounting?: Accounting | undefined
  /** The request id for a handshake (pass the gateway's genReqId); default: a sane client X-Request-Id, else a random UUID. */
  requestId?: ((req: IncomingMessage) => string) | undefined
  /** True while the gateway is closing: new handshakes get 503. */
  closing?: (() => boolean) | undefined
  /** Called once per handshake forwarded upstream (5xx, refused, timeout → error). */
  onOutcome?: ((route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome) => void) | undefined
  /** The per-route limiter HTTP requests go through (same rule, same counters), for routes with `rateLimit`. */
  rateLimit?: RouteLimiter | undefined
  /** The caller's verified phone number for `injectPhone` routes (see resolve.ts). */
  phoneOf?: PhoneLookup | undefined
  /** Epoch ms, for token expiry of open tunnels; default Date.now. */
  now?: (() => number) | undefined
  /** How often open tunnels' tokens are checked (ms); default 500. */
  sweepEvery?: number | undefined
}

export interface WebSocketProxy {
  /** Open client↔upstream tunnels right now. */
  readonly open: number
  /** Stop handling upgrades and cut every open tunnel (call before the server closes: it waits for them). */
  close: () => void
}

/** What every handshake shares. */
interface Env {
  pipeline: Pipeline
  tunnels: Tunnels
  accounting: Accounting
  metrics: Metrics
  logger: Logger | undefined
  closing: () => boolean
  onOutcome: WebSocketProxyOptions['onOutcome']
}

/** Handle WebSocket upgrades on `server` (the gateway's public listener). */
export function attachWebSocketProxy (server: Server, opts: WebSocketProxyOptions): WebSocketProxy {
  const { snapshot, metrics, trusted, logger } = opts
  const requestId = opts.requestId ?? defaultRequestId
  const tunnels = createTunnels({
    metrics,
    logger,
    now: opts.now,
    sweepEvery: opts.sweepEvery,
    limits: () => snapshot().config.websocket,
    authenticate: (authorization) => { snapshot().authenticate(authorization, true) }
  })
  const env: Env = {
    pipeline: { snapshot, trusted, rateLimit: opts.rateLimit, phoneOf: opts.phoneOf },
    tunnels,
    accounting: opts.accounting ?? createAccounting(logger, metrics, trusted),
    metrics,
    logger,
    closing: opts.closing ?? (() => false),
    onOutcome: opts.onOutcome
  }
  // proxy-addr walks X-Forwarded-For from the right while hops are trusted: the same client IP Fastify computes.
  const trust = (address: string) => trusted(address)

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    new Handshake(env, req, socket, head, requestId(req), proxyAddr(req, trust)).start()
  }
  server.on('upgrade', onUpgrade)
  return {
    get open () { return tunnels.open },
    close () {
      server.removeListener('upgrade', onUpgrade)
      tunnels.close()
    }
  }
}

/** One upgrade request, from the pipeline to an open tunnel or an answer on the socket. */
class Handshake {
  private readonly started = performance.now()
  private readonly input: PipelineInput
  private upstreamName = ''
  private done = false

  constructor (
    private readonly env: Env,
    private readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly head: Buffer,
    private readonly id: string,
    ip: string
  ) {
    const trace = traceContext(req.headers, env.pipeline.trusted(req.socket.remoteAddress ?? ''))
    this.input = { url: req.url ?? '', headers: req.headers, ip, id, trace, socket: req.socket, routeName: '' }
    // A client that resets mid-handshake must not crash the process.
    socket.on('error', () => { socket.destroy() })
  }

  start (): void {
    const { req, env } = this
    let planned: Resolved | Promise<Resolved>
    try {
      if (env.closing()) throw new GatewayError('SHUTTING_DOWN')
      const upgrade = req.headers.upgrade
      if (req.method !== 'GET' || upgrade?.toLowerCase() !== 'websocket') {
        throw new GatewayError('BAD_REQUEST', { detail: `upgrade to '${String(upgrade)}' with ${String(req.method)} is not proxied` })
      }
      planned = resolve(env.pipeline, this.input)
    } catch (err) {
      this.fail(err)
      return
    }
    if (!(planned instanceof Promise)) {
      this.admit(planned)
      return
    }
    // Same rule and counters as the route's HTTP requests: a reconnect loop is a request loop.
    planned.then((r) => {
      if (this.done) return
      if (this.socket.destroyed) { this.done = true; this.account(499, 0); return } // the client left meanwhile
      if (env.closing()) { this.fail(new GatewayError('SHUTTING_DOWN')); return }
      this.admit(r)
    }, (err: unknown) => { this.fail(err) })
  }

  private account (status: number, code: number): void {
    this.env.accounting.record({
      reqId: this.id,
      method: this.req.method ?? 'GET',
      url: this.input.url,
      route: this.input.routeName,
      upstream: this.upstreamName,
      status,
      code,
      startedAt: this.started,
      traceId: this.input.trace?.traceId ?? '',
      linkedTraceId: this.input.trace?.linkedTraceId,
      aborted: status === 499,
      websocket: true,
      proto: 'http/1.1',
      tls: isTls(this.req.socket)
    })
  }

  private fail (err: unknown): void {
    if (this.done) return
    this.done = true
    const ge = err instanceof GatewayError ? err : new GatewayError('INTERNAL', { cause: err })
    const { logger } = this.env
    if (ge.statusCode >= 500) logger?.error({ reqId: this.id, traceId: this.input.trace?.traceId, err: ge.cause ?? ge, code: ge.code, detail: ge.detail }, ge.detail ?? 'websocket handshake failed')
    else if (ge.detail !== undefined) logger?.debug({ reqId: this.id, code: ge.code, detail: ge.detail }, 'request rejected')
    writeRawEnvelope(this.socket, ge, this.id, this.input.trace?.traceId)
    this.account(ge.statusCode, ge.code)
  }

  /** A place among the open tunnels (limits per caller and gateway-wide), then the upstream. */
  private admit (r: Resolved): void {
    let slot: Reservation
    try {
      slot = this.env.tunnels.reserve(r.route.name, r.caller === undefined ? `ip:${this.input.ip}` : `u:${r.caller.openid}`)
    } catch (err) {
      this.fail(err)
      return
    }
    // Given back unless the handshake becomes a tunnel.
    this.socket.once('close', slot.release)
    this.upstreamName = r.upstream.name
    this.connect(r, slot)
  }

  /** Replay the handshake to the upstream; relay its answer or open the tunnel. */
  private connect (r: Resolved, slot: Reservation): void {
    const { route, upstream } = r
    const headers = r.upstreamHeaders
    // Hop-by-hop by nature, but these two are the handshake itself.
    headers.connection = 'Upgrade'
    headers.upgrade = this.req.headers.upgrade as string
    const url = new URL(upstream.origin)
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest
    const upstreamReq: ClientRequest = send({
      protocol: url.protocol,
      hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
      port: url.port === '' ? undefined : Number(url.port),
      method: 'GET',
      path: r.path,
      headers,
      // one connection per tunnel: an upgraded socket never goes back to a pool
      agent: false
    })
    let timedOut = false
    // Until the upstream answers the handshake; the open tunnel's idle limit is the route's websocket.idleTimeout.
    upstreamReq.setTimeout(route.config.timeout, () => {
      if (this.done) return
      timedOut = true
      upstreamReq.destroy()
    })
    // The client went away before the upstream answered: give up on the upstream too.
    const abandon = (): void => { if (!this.done) { this.done = true; upstreamReq.destroy(); this.account(499, 0) } }
    this.socket.once('close', abandon)

    upstreamReq.on('error', (err) => {
      if (this.done) return
      const kind = timedOut ? 'timeout' : errorKind(err)
      this.env.metrics.upstreamErrors.inc({ route: route.name, upstream: upstream.name, kind })
      this.env.onOutcome?.(route, upstream, 'error')
      this.fail(new GatewayError(kind === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE', {
        detail: `upstream ${route.name}/${upstream.name} ${kind} (websocket)`,
        cause: err
      }))
    })
    upstreamReq.on('response', (res) => {
      if (this.done) { res.destroy(); return }
      this.answered(r, abandon, res.statusCode ?? 502)
      this.relayRefusal(res)
    })
    upstreamReq.on('upgrade', (res, upstreamSocket, upstreamHead) => {
      if (this.done) { upstreamSocket.destroy(); return }
      this.answered(r, abandon, 101)
      this.socket.removeListener('close', slot.release)
      this.openTunnel(r, slot, res, upstreamSocket as Socket, upstreamHead)
    })
    upstreamReq.end()
  }

  /** The upstream answered the handshake (101 or not): settled, timed, a canary outcome. */
  private answered (r: Resolved, abandon: () => void, status: number): void {
    this.done = true
    this.socket.removeListener('close', abandon)
    this.env.metrics.upstreamDuration.observe({ route: r.route.name, upstream: r.upstream.name }, (performance.now() - this.started) / 1000)
    this.env.onOutcome?.(r.route, r.upstream, status >= 500 ? 'error' : 'ok')
  }

  /** Not upgraded: relay the upstream's answer (a 401/403/404 from the service, say) and close. */
  private relayRefusal (res: IncomingMessage): void {
    const { socket } = this
    const status = res.statusCode ?? 502
    let text = `HTTP/1.1 ${status} ${res.statusMessage ?? STATUS_CODES[status] ?? ''}\r\n`
    const raw = res.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      // The body is re-framed by closing the connection: drop the upstream's framing and connection headers.
      const name = raw[i].toLowerCase()
      if (name === 'transfer-encoding' || name === 'connection' || name === 'keep-alive' || name === 'upgrade' || name === 'x-request-id') continue
      if (name === 'set-cookie' && setsLoginCookie(raw[i + 1])) continue // only the gateway sets its login cookie
      text += `${raw[i]}: ${raw[i + 1]}\r\n`
    }
    // The gateway's id, as in the access line (the upstream's own is dropped above).
    socket.write(text + `X-Request-Id: ${this.id}\r\nConnection: close\r\n\r\n`)
    res.on('error', () => { socket.destroy() })
    // The server socket is half-open capable: do not wait for the client's FIN.
    socket.once('finish', () => socket.destroy())
    res.pipe(socket)
    this.account(status, 0)
  }

  /** Upgraded: pass the 101 on (with the gateway's request id) and hand both sockets to the tunnel. */
  private openTunnel (r: Resolved, slot: Reservation, res: IncomingMessage, upstreamSocket: Socket, upstreamHead: Buffer): void {
    upstreamSocket.on('error', () => { upstreamSocket.destroy() })
    // The handshake timeout must not become the tunnel's idle timeout (the route's websocket.idleTimeout is).
    upstreamSocket.setTimeout(0)
    upstreamSocket.setNoDelay(true)
    let text = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
    const raw = res.rawHeaders
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i].length === 12 && raw[i].toLowerCase() === 'x-request-id') continue
      if (raw[i].length === 10 && raw[i].toLowerCase() === 'set-cookie' && setsLoginCookie(raw[i + 1])) continue
      text += `${raw[i]}: ${raw[i + 1]}\r\n`
    }
    this.socket.write(text + `X-Request-Id: ${this.id}\r\n\r\n`)
    const authorization = this.req.headers.authorization
    const caller = r.caller
    slot.start({
      client: this.socket as Socket, // the server's 'upgrade' hands over the connection's net.Socket
      upstream: upstreamSocket,
      clientHead: this.head,
      upstreamHead,
      idleTimeout: r.route.config.websocket.idleTimeout,
      requestId: this.id,
      // The token that opened it keeps it open: checked again while it lasts.
      session: caller?.exp === undefined || authorization === undefined ? undefined : { authorization, exp: caller.exp }
    })
    this.account(101, 0)
  }
}
