/**
 * The public listener's Node HTTP server, and what happens to a request before
 * Fastify sees it:
 * - refusals (the parser's — smuggling attempts, garbage, oversized headers,
 *   timeouts — a missing Host, an Expect other than 100-continue, CONNECT) are
 *   answered with the envelope where a response can still be written, counted
 *   (`wegate_http_parser_errors_total{reason}`) and logged with the peer and
 *   Node's fixed reason, never the bytes the client sent;
 * - pipelined requests run one at a time, in order: a request waits until the
 *   response before it is finished, and a request behind a response that
 *   closes the connection never runs (nothing it asks reaches an upstream);
 * - with `listen.tls`, a TLS listener in front (createTlsHttpServer) hands each
 *   connection by ALPN to that same HTTP/1.1 server or to an HTTP/2 server with
 *   the same refusals, answered on the stream.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { constants as h2constants, createServer as createH2Server, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session } from 'node:http2'
import { constants as cryptoConstants, randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import { Readable, type Duplex } from 'node:stream'
import { createServer as createTlsServer, type SecureContextOptions, type TLSSocket } from 'node:tls'
import { TLS12_CIPHERS, type TlsMaterial } from '../config/tls.js'
import type { Logger } from 'pino'
import { envelopeText, ErrorCatalog, GatewayError, type ErrorName } from '../errors.js'
import { clientErrorName, endWithEnvelope, handleClientError } from '../http/errors.js'
import type { Metrics } from '../metrics/index.js'
import type { GatewayConfig } from '../config/schema.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void
type Request = IncomingMessage | Http2ServerRequest
type Response = ServerResponse | Http2ServerResponse

export interface RefusalLog {
  metrics: Metrics
  logger: Logger
}

/** Count and log one refusal. `reason` must come from a bounded set (never from the request). */
function refused (log: RefusalLog, reason: string, status: number, peer: string | undefined, detail?: string): void {
  log.metrics.parserErrors.inc({ reason })
  log.logger.info({ status, reason, peer: peer ?? '', ...(detail === undefined ? {} : { detail }) }, 'request refused before routing')
}

// llhttp's and Node's error codes are a fixed set: safe as a label and in the log
const NODE_CODE = /^(HPE_[A-Z_]+|ERR_HTTP_[A-Z_]+)$/

/** Fastify's clientErrorHandler: count and log, then answer as http/errors.ts does. */
export function clientErrorHandler (log: RefusalLog): (err: NodeJS.ErrnoException & { reason?: unknown }, socket: Duplex) => void {
  return (err, socket) => {
    const name = clientErrorName(err)
    if (name !== undefined) {
      const reason = typeof err.code === 'string' && NODE_CODE.test(err.code) ? err.code.toLowerCase() : 'other'
      // llhttp's `reason` is one of its fixed messages ("Invalid header value char"), not the client's bytes
      const detail = typeof err.reason === 'string' && reason.startsWith('hpe_') ? err.reason : undefined
      refused(log, reason, ErrorCatalog[name].status, (socket as { remoteAddress?: string }).remoteAddress, detail)
    }
    handleClientError(err, socket)
  }
}

/**
 * Answer a request Fastify will never see with the envelope and close the connection
 * (HTTP/2: only this stream; `Connection` is not an HTTP/2 header).
 */
function answer (res: Response, name: ErrorName): void {
  const ge = new GatewayError(name)
  const body = envelopeText(ge)
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body)
  }
  if (!isHttp2(res)) headers.connection = 'close'
  // (the two response types' writeHead overloads do not unify)
  ;(res as ServerResponse).writeHead(ge.statusCode, headers)
  res.end(body)
}

function isHttp2 (res: Response): res is Http2ServerResponse {
  return 'stream' in res
}

/** The public server: Node's limits from `limits`, refusals answered and counted, pipelining in order. */
export function createHttpServer (limits: GatewayConfig['limits'], handler: Handler, log: RefusalLog): Server {
  const server = createServer({
    maxHeaderSize: limits.headerSize,
    requestTimeout: limits.requestTimeout,
    headersTimeout: limits.headersTimeout,
    keepAliveTimeout: limits.keepAliveTimeout,
    // Node checks the two timeouts above on this interval (default 30 s, far too coarse).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, limits.headersTimeout / 4)),
    // Checked below, to answer with the envelope instead of Node's bare 400.
    requireHostHeader: false
  }, (req, res) => {
    if (req.headers.host === undefined && req.httpVersionMajor === 1 && req.httpVersionMinor === 1) {
      refused(log, 'missing_host', 400, req.socket.remoteAddress)
      answer(res, 'BAD_REQUEST')
      return
    }
    // Pipelined behind a response still being written: Node queued this one's response (no
    // socket yet) and hands it the socket when the one before is finished — never, if that
    // one closed the connection.
    if (res.socket === null) res.once('socket', () => handler(req, res))
    else handler(req, res)
  })
  // Any Expect but 100-continue (which Node answers itself).
  server.on('checkExpectation', onExpectation(log))
  // A forward proxy's method: not ours. Without a listener Node just drops the socket.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    refused(log, 'connect', 405, req.socket.remoteAddress)
    socket.on('error', () => socket.destroy())
    endWithEnvelope(socket, 'METHOD_NOT_ALLOWED')
  })
  return server
}

function onExpectation (log: RefusalLog): (req: Request, res: Response) => void {
  return (req, res) => {
    refused(log, 'expectation', 417, req.socket.remoteAddress)
    answer(res, 'EXPECTATION_FAILED')
  }
}

/** An HTTP/2 header list's size as RFC 9113 §6.5.2 counts it: names and values, plus 32 bytes a field. */
function headerListSize (raw: string[]): number {
  let n = 0
  for (let i = 0; i < raw.length; i++) n += raw[i].length
  return n + 16 * raw.length
}

/**
 * limits.requestTimeout for one HTTP/2 stream, as Node enforces it on an HTTP/1.1
 * connection: the whole request (headers and body) must have arrived within it,
 * from the stream's start. A stream whose body is still coming when it fires gets
 * the 408 envelope if no response has started (then RST_STREAM NO_ERROR: stop
 * sending, RFC 9113 §8.1), else RST_STREAM CANCEL; either way the request ends
 * for the route, and a proxied request releases its upstream connection.
 */
function requestDeadline (req: Http2ServerRequest, res: Http2ServerResponse, ms: number, log: RefusalLog): void {
  const stream = res.stream
  if (stream.endAfterHeaders) return
  const timer = setTimeout(() => {
    // The peer's END_STREAM arrived (the route may not have read the body yet): complete.
    if (stream.destroyed || stream.closed || stream.state.remoteClose === 1) return
    refused(log, 'err_http_request_timeout', 408, req.socket.remoteAddress)
    if (res.headersSent) {
      Readable.prototype.destroy.call(req)
      stream.close(h2constants.NGHTTP2_CANCEL)
      return
    }
    // The request ends here for the route: destroyed, not ended (Node would end it as if whole when
    // the stream closes), so a proxied body is aborted upstream, never forwarded truncated.
    Readable.prototype.destroy.call(req)
    answer(res, 'REQUEST_TIMEOUT')
    // Sent once the response is flushed.
    stream.close(h2constants.NGHTTP2_NO_ERROR)
  }, ms)
  timer.unref()
  req.once('end', () => clearTimeout(timer))
  stream.once('close', () => clearTimeout(timer))
}

/** What the TLS listener adds to Node's server API: applying a new certificate to new connections. */
export interface TlsServer extends Server {
  setSecureContext: (options: SecureContextOptions) => void
}

/** A secure context for `material`: TLS 1.2+, ECDHE + AEAD on 1.2, the server's cipher order. */
export function secureContextOptions (material: TlsMaterial): SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    minVersion: 'TLSv1.2',
    ciphers: TLS12_CIPHERS,
    honorCipherOrder: true,
    // TLS 1.2 client-initiated renegotiation: a handshake's CPU cost on demand, for nothing we use.
    secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION
  }
}

/**
 * The public server with TLS: a TLS listener that hands each connection, by the
 * protocol ALPN settled on, to the HTTP/1.1 server above (the same refusals,
 * timeouts and pipelining; WebSocket upgrades) or to an HTTP/2 server. Fastify
 * sees one server: listen/close/address are the TLS listener's, and
 * closeIdleConnections / closeAllConnections reach both protocols — idle HTTP/1.1
 * connections are closed, HTTP/2 sessions get GOAWAY (their open streams finish).
 */
/** Session ticket keys are replaced this often (a stolen key decrypts at most this much recorded TLS 1.2 traffic). */
export const TICKET_KEY_ROTATION_MS = 12 * 60 * 60 * 1000

export function createTlsHttpServer (limits: GatewayConfig['limits'], handler: Handler, log: RefusalLog, material: TlsMaterial,
  opts: { ticketKeyRotationMs?: number } = {}): TlsServer {
  const h1 = createHttpServer(limits, handler, log)
  // Fastify registers its clientErrorHandler on the server it listens with (the TLS
  // listener, which never emits it); HTTP/1.1's parser errors come from here.
  h1.on('clientError', clientErrorHandler(log))

  const h2 = createH2Server({
    // nghttp2 resets a stream whose header list exceeds this (no HTTP answer): twice the limit,
    // so a client over it by up to as much again gets the 431 envelope below, as on HTTP/1.1.
    settings: {
      maxHeaderListSize: 2 * limits.headerSize,
      // Node's default is unbounded; 100 is what browsers and other servers (nginx 128) expect.
      maxConcurrentStreams: 100
    },
    // nghttp2's memory per session (header tables, queued frames), in MB: Node's default, stated
    // here as the bound it is. 100 streams' 64 KiB receive windows (6.4 MB) fit; a session over
    // it gets ENHANCE_YOUR_CALM on new streams.
    maxSessionMemory: 10
  })
  h2.on('request', (req: Http2ServerRequest, res: Http2ServerResponse) => {
    // limits.headerSize, as HTTP/1.1's parser enforces it (nghttp2 only advertises the setting).
    if (headerListSize(req.rawHeaders) > limits.headerSize) {
      refused(log, 'h2_header_overflow', 431, req.socket.remoteAddress)
      answer(res, 'HEADERS_TOO_LARGE')
      return
    }
    // HTTP/2 carries the host in :authority (or Host).
    const authority = req.headers[':authority']
    const host = req.headers.host
    if (authority === undefined && host === undefined) {
      refused(log, 'missing_host', 400, req.socket.remoteAddress)
      answer(res, 'BAD_REQUEST')
      return
    }
    // Both, naming different hosts: malformed (RFC 9113 §8.3.1); which one X-Forwarded-Host,
    // CORS or an upstream would believe is not a choice to leave to the client.
    if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) {
      refused(log, 'h2_authority_mismatch', 400, req.socket.remoteAddress)
      answer(res, 'BAD_REQUEST')
      return
    }
    requestDeadline(req, res, limits.requestTimeout, log)
    // Fastify treats both request types alike (it checks httpVersionMajor where they differ).
    handler(req as unknown as IncomingMessage, res as unknown as ServerResponse)
  })
  h2.on('checkExpectation', onExpectation(log))
  h2.on('connect', (req: Http2ServerRequest, res: Http2ServerResponse) => {
    refused(log, 'connect', 405, req.socket.remoteAddress)
    answer(res, 'METHOD_NOT_ALLOWED')
  })
  const sessions = new Set<ServerHttp2Session>()
  h2.on('session', (session: ServerHttp2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
    // Idle (no frame either way) like an HTTP/1.1 keep-alive connection: GOAWAY, open streams
    // finish. A stream still open then has limits.requestTimeout more before the connection is
    // closed: a session with silent streams is not held forever.
    session.setTimeout(limits.keepAliveTimeout, () => {
      session.close()
      if (!session.destroyed) {
        const grace = setTimeout(() => session.destroy(), limits.requestTimeout).unref()
        session.once('close', () => clearTimeout(grace))
      }
    })
  })

  const front = createTlsServer({
    ...secureContextOptions(material),
    ALPNProtocols: ['h2', 'http/1.1'],
    // A client gets as long for the handshake as for its request headers.
    handshakeTimeout: limits.headersTimeout
  })
  // Session tickets (resumption without a full handshake) are kept, with their keys replaced
  // every 12 h: tickets older than that are refused (a full handshake), and a leaked key does not
  // expose past TLS 1.2 sessions beyond it. TLS 1.3 resumption is forward-secret (PSK with ECDHE).
  const rotation = setInterval(() => front.setTicketKeys(randomBytes(48)), opts.ticketKeyRotationMs ?? TICKET_KEY_ROTATION_MS).unref()
  front.once('close', () => clearInterval(rotation))
  const sockets = new Set<Socket>()
  front.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  front.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') h2.emit('connection', socket)
    else h1.emit('connection', socket)
  })
  front.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    // Old protocol versions, no shared cipher, scanners: nothing to answer in HTTP.
    log.metrics.parserErrors.inc({ reason: 'tls_handshake' })
    log.logger.debug({ peer: socket.remoteAddress ?? '', code: err.code ?? '' }, 'TLS handshake failed')
  })
  // HTTP/1.1's timeouts are checked on an interval the server starts when it listens.
  front.on('listening', () => h1.emit('listening'))
  front.on('close', () => h1.close())
  // WebSocket upgrades (HTTP/1.1 only) reach the listeners registered on the server Fastify exposes.
  h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => front.emit('upgrade', req, socket, head))

  const server = front as unknown as TlsServer
  server.closeIdleConnections = () => {
    h1.closeIdleConnections()
    for (const session of sessions) session.close()
  }
  server.closeAllConnections = () => {
    h1.closeAllConnections()
    for (const session of sessions) session.destroy()
    // Upgraded WebSockets and handshakes in progress too.
    for (const socket of sockets) socket.destroy()
  }
  return server
}
