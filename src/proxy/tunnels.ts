/**
 * Open WebSocket tunnels: how many there may be, how long they may idle, and
 * how long the token that opened one keeps it open.
 *
 * A handshake reserves a slot first (gateway-wide `websocket.maxTunnels` → 503,
 * per caller `websocket.maxTunnelsPerCaller` → 429), so concurrent handshakes
 * cannot overshoot the limits. Once upgraded, bytes are relayed untouched; the
 * relay only follows the frame headers going by (no payload is read), so that a
 * close frame can be put between two frames when the gateway ends a tunnel:
 * - the token it was opened with is refused by the guard (revoked by logout,
 *   logout-all, reuse, a store loss…) or reaches its `exp`: code 4401, checked on
 *   every sweep (500 ms) against the current snapshot's guard, a local lookup;
 * - no frame either way for the route's `websocket.idleTimeout`: code 1001.
 * Both peers get the close frame (the upstream's masked, as a client's must be).
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import type { Metrics } from '../metrics/index.js'

/** Close codes the gateway sends (docs/routing.md, "WebSocket"). */
export const CLOSE_TOKEN = 4401
export const CLOSE_IDLE = 1001

/** How often open tunnels' tokens are checked (ms): a revoked token's tunnel closes within this. */
export const SWEEP_EVERY = 500

/** The token a tunnel was opened with. */
export interface TunnelSession {
  /** The Authorization header of the handshake, checked again on every sweep. */
  authorization: string
  /** The token's `exp` (epoch seconds). */
  exp: number
}

export interface TunnelLimits {
  maxTunnels: number
  maxTunnelsPerCaller: number
}

export interface TunnelOptions {
  metrics: Metrics
  /** The current limits (read at every handshake, so a reload applies to the next one). */
  limits: () => TunnelLimits
  /** Check a tunnel's token as a new request's would be (the current guard); throws GatewayError when refused. */
  authenticate: (authorization: string) => void
  logger?: Logger | undefined
  /** Epoch ms; default Date.now. */
  now?: (() => number) | undefined
  /** Sweep period in ms; default SWEEP_EVERY. */
  sweepEvery?: number | undefined
}

/** A handshake's place among the open tunnels, held from admission to close. */
export interface Reservation {
  /** The handshake did not become a tunnel: give the slot back. */
  release: () => void
  /** The upstream switched protocols: relay both ways until either side closes (or the gateway closes it). */
  start: (tunnel: TunnelStart) => void
}

export interface TunnelStart {
  /** The upgraded client connection (a net.Socket: its idle timer serves the tunnel's). */
  client: Socket
  upstream: Duplex
  /** Bytes the client sent after its handshake / the upstream after its 101. */
  clientHead: Buffer
  upstreamHead: Buffer
  /** The route's websocket.idleTimeout (ms; 0: none). */
  idleTimeout: number
  /** The handshake's request id, for the log line when the gateway closes the tunnel. */
  requestId: string
  session: TunnelSession | undefined
}

export interface Tunnels {
  /** Open tunnels right now. */
  readonly open: number
  /** Admit a handshake on `route` for `callerKey` (`u:<openid>` or `ip:<address>`); throws TUNNELS_FULL / TUNNELS_PER_CALLER. */
  reserve: (route: string, callerKey: string) => Reservation
  /** Cut every tunnel and stop the sweep (the gateway is closing). */
  close: () => void
}

export function createTunnels (opts: TunnelOptions): Tunnels {
  const { metrics, logger } = opts
  const now = opts.now ?? Date.now
  let held = 0
  const perCaller = new Map<string, number>()
  const open = new Set<Tunnel>()

  const free = (callerKey: string): void => {
    held--
    const n = (perCaller.get(callerKey) ?? 1) - 1
    if (n === 0) perCaller.delete(callerKey)
    else perCaller.set(callerKey, n)
  }

  const sweep = (): void => { sweepTokens(open, now(), opts.authenticate) }
  const timer = setInterval(sweep, opts.sweepEvery ?? SWEEP_EVERY)
  timer.unref()

  const registry: Registry = {
    opened (tunnel) {
      open.add(tunnel)
      metrics.websocketTunnels.inc({ route: tunnel.route })
    },
    closed (tunnel) {
      if (!open.delete(tunnel)) return
      metrics.websocketTunnels.dec({ route: tunnel.route })
      free(tunnel.callerKey)
    },
    shut (tunnel, code, reason) {
      metrics.websocketClosed.inc({ route: tunnel.route, reason })
      logger?.info({ reqId: tunnel.requestId, route: tunnel.route, closeCode: code, reason }, 'websocket closed by the gateway')
    }
  }

  return {
    get open () { return open.size },
    reserve (route, callerKey) {
      const limits = opts.limits()
      if (held >= limits.maxTunnels) throw new GatewayError('TUNNELS_FULL', { detail: `${held} tunnels open or opening` })
      const mine = perCaller.get(callerKey) ?? 0
      if (mine >= limits.maxTunnelsPerCaller) throw new GatewayError('TUNNELS_PER_CALLER', { detail: `${mine} tunnels for this caller` })
      held++
      perCaller.set(callerKey, mine + 1)
      let settled = false
      return {
        release () {
          if (settled) return
          settled = true
          free(callerKey)
        },
        start (s) {
          if (settled) {
            s.client.destroy()
            s.upstream.destroy()
            return
          }
          settled = true
          new Tunnel(registry, route, callerKey, s).relay(s)
        }
      }
    },
    close () {
      clearInterval(timer)
      for (const tunnel of open) tunnel.destroy()
    }
  }
}

/**
 * Close every tunnel whose token is past its exp at `t`, or refused as a new request's would be
 * (4401, the refusal's envelope as reason).
 */
function sweepTokens (open: ReadonlySet<Tunnel>, t: number, authenticate: (authorization: string) => void): void {
  for (const tunnel of open) {
    const session = tunnel.session
    if (session === undefined || tunnel.shutting) continue
    let refused: GatewayError | undefined
    if (t >= session.exp * 1000) refused = new GatewayError('TOKEN_EXPIRED')
    else {
      try {
        authenticate(session.authorization)
      } catch (err) {
        refused = err instanceof GatewayError ? err : new GatewayError('TOKEN_REVOKED')
        // The store cannot say (Redis away, mirror resynchronising): the tunnel stays open,
        // and the next sweep after the resync sees any revocation made meanwhile.
        if (refused.statusCode >= 500) refused = undefined
      }
    }
    if (refused !== undefined) {
      const reason = refused.errorName === 'TOKEN_EXPIRED' ? 'expired' : 'revoked'
      tunnel.shut(CLOSE_TOKEN, JSON.stringify({ code: refused.code, message: refused.message }), reason)
    }
  }
}

interface Registry {
  opened: (tunnel: Tunnel) => void
  closed: (tunnel: Tunnel) => void
  shut: (tunnel: Tunnel, code: number, reason: string) => void
}

/** One client↔upstream tunnel. */
class Tunnel {
  readonly session: TunnelSession | undefined
  readonly requestId: string
  private readonly client: Socket
  private readonly upstream: Duplex
  // Frame boundaries of what has been relayed each way.
  private readonly toClient = new FrameCursor()
  private readonly toUpstream = new FrameCursor()
  /** The gateway has sent its close frames; the sockets close soon. */
  shutting = false

  constructor (
    private readonly registry: Registry,
    readonly route: string,
    readonly callerKey: string,
    s: TunnelStart
  ) {
    this.client = s.client
    this.upstream = s.upstream
    this.session = s.session
    this.requestId = s.requestId
  }

  relay (s: TunnelStart): void {
    const { client, upstream } = this
    this.registry.opened(this)
    // Either side closing or failing ends the tunnel on both.
    const end = (): void => { this.destroy() }
    client.once('close', end)
    upstream.once('close', end)
    if (s.upstreamHead.length > 0) { this.toClient.feed(s.upstreamHead); client.write(s.upstreamHead) }
    if (s.clientHead.length > 0) { this.toUpstream.feed(s.clientHead); upstream.write(s.clientHead) }
    upstream.on('data', (chunk: Buffer) => { this.toClient.feed(chunk) })
    client.on('data', (chunk: Buffer) => { this.toUpstream.feed(chunk) })
    client.pipe(upstream)
    upstream.pipe(client)
    // Activity is any byte either way: the client socket reads one direction and writes the other.
    if (s.idleTimeout > 0) client.setTimeout(s.idleTimeout, () => { this.shut(CLOSE_IDLE, 'idle timeout', 'idle') })
  }

  /** End the tunnel with a close frame to both peers (where the relay is between frames; else the connection is cut). */
  shut (code: number, reason: string, why: string): void {
    if (this.shutting) return
    this.shutting = true
    this.registry.shut(this, code, why)
    const { client, upstream } = this
    client.unpipe(upstream)
    upstream.unpipe(client)
    client.setTimeout(0)
    sendClose(client, this.toClient, closeFrame(code, reason, false))
    sendClose(upstream, this.toUpstream, closeFrame(code, reason, true))
    // Each peer answers with its own close frame and closes; do not wait for a silent one.
    setTimeout(() => { this.destroy() }, 1000).unref()
  }

  destroy (): void {
    this.client.destroy()
    this.upstream.destroy()
    this.registry.closed(this)
  }
}

function sendClose (socket: Duplex, cursor: FrameCursor, frame: Buffer): void {
  if (!cursor.atBoundary || !socket.writable) {
    socket.destroy()
    return
  }
  socket.end(frame)
}

/** A close frame: code and UTF-8 reason (at most 123 bytes), masked when it goes to the upstream (client → server). */
export function closeFrame (code: number, reason: string, masked: boolean): Buffer {
  let text = Buffer.from(reason, 'utf8')
  if (text.length > 123) text = text.subarray(0, 123)
  const payload = Buffer.alloc(2 + text.length)
  payload.writeUInt16BE(code, 0)
  text.copy(payload, 2)
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const mask = randomBytes(4)
  for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]
  return Buffer.concat([Buffer.from([0x88, 0x80 | payload.length]), mask, payload])
}

/**
 * Follows WebSocket frame boundaries in a byte stream without reading payloads:
 * per chunk, one step per frame header. A header split across chunks is kept
 * (at most 14 bytes) until the rest arrives.
 */
export class FrameCursor {
  /** Payload bytes of the current frame still to come. */
  private remaining = 0
  private partial: Buffer | undefined

  /** True between two frames: a close frame may go next. */
  get atBoundary (): boolean {
    return this.remaining === 0 && this.partial === undefined
  }

  feed (chunk: Buffer): void {
    let buf = chunk
    if (this.partial !== undefined) {
      buf = Buffer.concat([this.partial, chunk])
      this.partial = undefined
    }
    let i = 0
    const n = buf.length
    while (i < n) {
      if (this.remaining > 0) {
        const take = Math.min(this.remaining, n - i)
        this.remaining -= take
        i += take
        continue
      }
      if (n - i < 2) break
      const b1 = buf[i + 1]
      let len = b1 & 0x7f
      const ext = len === 126 ? 2 : len === 127 ? 8 : 0
      const header = 2 + ext + ((b1 & 0x80) !== 0 ? 4 : 0)
      if (n - i < header) break
      if (len === 126) len = buf.readUInt16BE(i + 2)
      else if (len === 127) len = Number(buf.readBigUInt64BE(i + 2))
      i += header
      this.remaining = len
    }
    if (i < n) this.partial = Buffer.from(buf.subarray(i))
  }
}
