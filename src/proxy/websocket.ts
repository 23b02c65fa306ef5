/**
 * WebSocket proxying: the public server's `upgrade` event. A handshake goes
 * through the same steps as an HTTP request in forward.ts — path normalisation,
 * route match, authentication (`wx.connectSocket` can send an Authorization
 * header), the route's rate limit (same rule, same counters), the same picker,
 * identity headers set from the token and client copies stripped — then the upgrade is replayed to the chosen upstream and,
 * once it answers 101, bytes are piped both ways without being parsed.
 * Anything the gateway refuses is an envelope on the raw socket, then close.
 */
import { randomUUID } from 'node:crypto'
import { STATUS_CODES, request as httpRequest, type ClientRequest, type IncomingMessage, type Server } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import proxyAddr from '@fastify/proxy-addr'
import type { Logger } from 'pino'
import { GatewayError, envelopeText } from '../errors.js'
import type { RouteLimiter } from '../http/ratelimit.js'
import type { Metrics } from '../metrics/index.js'
import { errorKind, pickUpstream, type Caller, type ProxySnapshot, type UpstreamOutcome } from './forward.js'
import { upstreamRequestHeaders } from './headers.js'
import { normalisePath } from './path.js'
import type { CompiledRoute, CompiledUpstream } from './routes.js'
import { createTunnels, type Reservation } from './tunnels.js'

export interface WebSocketProxyOptions {
  snapshot: () => ProxySnapshot
  metrics: Metrics
  /** Is this socket peer a trusted proxy (trustProxy)? */
  trusted: (address: string) => boolean
  /** Access and rejection lines go here; default: not logged. */
  logger?: Logger | undefined
  /** The request id for a handshake (pass the gateway's genReqId); default: a sane client X-Request-Id, else a random UUID. */
  requestId?: ((req: IncomingMessage) => string) | undefined
  /** True while the gateway is closing: new handshakes get 503. */
  closing?: (() => boolean) | undefined
  /** Called once per handshake forwarded upstream (5xx, refused, timeout → error). */
  onOutcome?: ((route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome) => void) | undefined
  /** The per-route limiter HTTP requests go through (same rule, same counters), for routes with `rateLimit`. */
  rateLimit?: RouteLimiter | undefined
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

/** Handle WebSocket upgrades on `server` (the gateway's public listener). */
export function attachWebSocketProxy (server: Server, opts: WebSocketProxyOptions): WebSocketProxy {
  const { snapshot, metrics, trusted, logger, onOutcome, rateLimit } = opts
  const requestId = opts.requestId ?? defaultRequestId
  const closing = opts.closing ?? (() => false)
  const tunnels = createTunnels({
    metrics,
    logger,
    now: opts.now,
    sweepEvery: opts.sweepEvery,
    limits: () => snapshot().config.websocket,
    authenticate: (authorization) => { snapshot().authenticate(authorization, true) }
  })
  // proxy-addr walks X-Forwarded-For from the right while hops are trusted: the same client IP Fastify computes.
  const trust = (address: string) => trusted(address)

  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const started = performance.now()
    const id = requestId(req)
    let routeName = 'none'
    let upstreamName = 'none'
    let done = false
    // A client that resets mid-handshake must not crash the process.
    socket.on('error', () => { socket.destroy() })

    const log = (status: number, code?: number) => {
      const ms = performance.now() - started
      metrics.requests.inc({ route: routeName, upstream: upstreamName, method: 'GET', status_class: `${Math.floor(status / 100)}xx` })
      metrics.requestDuration.observe({ route: routeName, upstream: upstreamName }, ms / 1000)
      logger?.info({ reqId: id, method: req.method, path: pathOf(req.url ?? ''), route: routeName, upstream: upstreamName, status, ...(code === undefined ? {} : { code }), ms: Math.round(ms * 100) / 100, websocket: true }, 'access')
    }

    const fail = (ge: GatewayError) => {
      if (done) return
      done = true
      if (ge.statusCode >= 500) logger?.error({ reqId: id, err: ge.cause ?? ge, code: ge.code, detail: ge.detail }, ge.detail ?? 'websocket handshake failed')
      else if (ge.detail !== undefined) logger?.debug({ reqId: id, code: ge.code, detail: ge.detail }, 'request rejected')
      writeEnvelope(socket, ge, id)
      log(ge.statusCode, ge.code)
    }

    let route: CompiledRoute
    let caller: Caller | undefined
    let protocol: string
    let target: { path: string, query: string }
    let ip: string
    try {
      if (closing()) throw new GatewayError('SHUTTING_DOWN')
      const upgrade = req.headers.upgrade
      if (req.method !== 'GET' || upgrade?.toLowerCase() !== 'websocket') {
        throw new GatewayError('BAD_REQUEST', { detail: `upgrade to '${String(upgrade)}' with ${String(req.method)} is not proxied` })
      }
      protocol = upgrade
      const snap = snapshot()
      const normalised = normalisePath(req.url ?? '')
      if (!normalised.ok) throw new GatewayError('BAD_PATH', { detail: `path rejected: ${normalised.reason}` })
      target = normalised
      const matched = snap.routes.match(target.path)
      if (matched === undefined) throw new GatewayError('NO_ROUTE')
      route = matched
      routeName = route.name
      caller = route.auth === 'public' ? undefined : snap.authenticate(req.headers.authorization, route.auth === 'required')
      ip = proxyAddr(req, trust)
    } catch (err) {
      fail(err instanceof GatewayError ? err : new GatewayError('INTERNAL', { cause: err }))
      return
    }

    const rule = route.config.rateLimit
    if (rule === undefined || rateLimit === undefined) {
      admit()
      return
    }
    // Same rule and counters as the route's HTTP requests: a reconnect loop is a request loop.
    rateLimit({ routeName: route.name, rateRule: rule, callerOpenid: caller?.openid ?? '', ip }).then(() => {
      if (done) return
      if (socket.destroyed) { done = true; log(499); return } // the client left while the limiter answered
      if (closing()) { fail(new GatewayError('SHUTTING_DOWN')); return }
      admit()
    }, (err: unknown) => {
      fail(err instanceof GatewayError ? err : new GatewayError('INTERNAL', { cause: err }))
    })

    /** A place among the open tunnels (limits per caller and gateway-wide), then connect. */
    function admit (): void {
      let slot: Reservation
      try {
        slot = tunnels.reserve(route.name, caller === undefined ? `ip:${ip}` : `u:${caller.openid}`)
      } catch (err) {
        fail(err instanceof GatewayError ? err : new GatewayError('INTERNAL', { cause: err }))
        return
      }
      // Given back unless the handshake becomes a tunnel.
      socket.once('close', slot.release)
      connect(slot)
    }

    /** Pick the upstream, replay the handshake to it, relay its answer or open the tunnel. */
    function connect (slot: Reservation): void {
      let upstream: CompiledUpstream
      let headers: Record<string, string | string[]>
      let path: string
      try {
        const remote = req.socket.remoteAddress ?? ''
        upstream = pickUpstream(route, caller, ip, req.headers)
        upstreamName = upstream.name
        headers = upstreamRequestHeaders(req.headers, {
          remoteAddress: remote,
          remoteTrusted: trusted(remote),
          requestId: id,
          upstreamHost: upstream.host,
          forwardAuthorization: route.config.forwardAuthorization,
          identity: caller
        })
        // Hop-by-hop by nature, but these two are the handshake itself.
        headers.connection = 'Upgrade'
        headers.upgrade = protocol
        path = route.upstreamPath(target.path, upstream) + target.query
      } catch (err) {
        fail(err instanceof GatewayError ? err : new GatewayError('INTERNAL', { cause: err }))
        return
      }

      const url = new URL(upstream.origin)
      const send = url.protocol === 'https:' ? httpsRequest : httpRequest
      const upstreamReq: ClientRequest = send({
        protocol: url.protocol,
        hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
        port: url.port === '' ? undefined : Number(url.port),
        method: 'GET',
        path,
        headers,
        // one connection per tunnel: an upgraded socket never goes back to a pool
        agent: false
      })
      let timedOut = false
      // Until the upstream answers the handshake; once upgraded, tunnels may idle as long as both ends like.
      upstreamReq.setTimeout(route.config.timeout, () => {
        if (done) return
        timedOut = true
        upstreamReq.destroy()
      })
      // The client went away before the upstream answered: give up on the upstream too.
      const abandon = () => { if (!done) { done = true; upstreamReq.destroy(); log(499) } }
      socket.once('close', abandon)

      upstreamReq.on('error', (err) => {
        if (done) return
        const kind = timedOut ? 'timeout' : errorKind(err)
        metrics.upstreamErrors.inc({ route: route.name, upstream: upstream.name, kind })
        onOutcome?.(route, upstream, 'error')
        fail(new GatewayError(kind === 'timeout' ? 'UPSTREAM_TIMEOUT' : 'UPSTREAM_UNAVAILABLE', {
          detail: `upstream ${route.name}/${upstream.name} ${kind} (websocket)`,
          cause: err
        }))
      })

      upstreamReq.on('response', (res) => {
        // Not upgraded: relay the answer (a 401/403/404 from the service, say) and close.
        if (done) { res.destroy(); return }
        done = true
        socket.removeListener('close', abandon)
        const status = res.statusCode ?? 502
        metrics.upstreamDuration.observe({ route: route.name, upstream: upstream.name }, (performance.now() - started) / 1000)
        onOutcome?.(route, upstream, status >= 500 ? 'error' : 'ok')
        let text = `HTTP/1.1 ${status} ${res.statusMessage ?? STATUS_CODES[status] ?? ''}\r\n`
        const raw = res.rawHeaders
        for (let i = 0; i < raw.length; i += 2) {
          // The body is re-framed by closing the connection: drop the upstream's framing and connection headers.
          const name = raw[i].toLowerCase()
          if (name === 'transfer-encoding' || name === 'connection' || name === 'keep-alive' || name === 'upgrade' || name === 'x-request-id') continue
          text += `${raw[i]}: ${raw[i + 1]}\r\n`
        }
        // The gateway's id, as in the access line (the upstream's own is dropped above).
        socket.write(text + `X-Request-Id: ${id}\r\nConnection: close\r\n\r\n`)
        res.on('error', () => { socket.destroy() })
        // The server socket is half-open capable: do not wait for the client's FIN.
        socket.once('finish', () => socket.destroy())
        res.pipe(socket)
        log(status)
      })

      upstreamReq.on('upgrade', (res, upstreamSocket, upstreamHead) => {
        if (done) { upstreamSocket.destroy(); return }
        done = true
        socket.removeListener('close', abandon)
        metrics.upstreamDuration.observe({ route: route.name, upstream: upstream.name }, (performance.now() - started) / 1000)
        onOutcome?.(route, upstream, 'ok')
        socket.removeListener('close', slot.release)
        upstreamSocket.on('error', () => { upstreamSocket.destroy() })
        // The handshake timeout must not become the tunnel's idle timeout (the route's websocket.idleTimeout is).
        upstreamSocket.setTimeout(0)
        upstreamSocket.setNoDelay(true)
        let text = `HTTP/1.1 101 ${res.statusMessage ?? 'Switching Protocols'}\r\n`
        const raw = res.rawHeaders
        for (let i = 0; i < raw.length; i += 2) {
          if (raw[i].length === 12 && raw[i].toLowerCase() === 'x-request-id') continue
          text += `${raw[i]}: ${raw[i + 1]}\r\n`
        }
        socket.write(text + `X-Request-Id: ${id}\r\n\r\n`)
        const authorization = req.headers.authorization
        slot.start({
          client: socket as Socket, // the server's 'upgrade' hands over the connection's net.Socket
          upstream: upstreamSocket,
          clientHead: head,
          upstreamHead,
          idleTimeout: route.config.websocket.idleTimeout,
          requestId: id,
          // The token that opened it keeps it open: checked again while it lasts.
          session: caller?.exp === undefined || authorization === undefined ? undefined : { authorization, exp: caller.exp }
        })
        log(101)
      })

      upstreamReq.end()
    }
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

// Same rule as app.ts: an id safe to log and echo (1-128 of [A-Za-z0-9._:@-]) is kept so traces join up.
const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/
function defaultRequestId (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/** An envelope answer on a socket that never became an HTTP response, then close. */
function writeEnvelope (socket: Duplex, ge: GatewayError, requestId: string): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  // The server socket is half-open capable: do not wait for the client's FIN.
  socket.once('finish', () => socket.destroy())
  const body = envelopeText(ge)
  let extra = ''
  if (ge.headers !== undefined) for (const [k, v] of Object.entries(ge.headers)) extra += `${k}: ${v}\r\n`
  socket.end(
    `HTTP/1.1 ${ge.statusCode} ${STATUS_CODES[ge.statusCode] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    `X-Request-Id: ${requestId}\r\n` + extra +
    'Connection: close\r\n\r\n' + body
  )
}

function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}
