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
 *   closes the connection never runs (nothing it asks reaches an upstream).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import { envelopeText, ErrorCatalog, GatewayError, type ErrorName } from '../errors.js'
import { clientErrorName, endWithEnvelope, handleClientError } from '../http/errors.js'
import type { Metrics } from '../metrics/index.js'
import type { GatewayConfig } from '../config/schema.js'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

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

/** Answer a request Fastify will never see with the envelope and close the connection. */
function answer (res: ServerResponse, name: ErrorName): void {
  const ge = new GatewayError(name)
  const body = envelopeText(ge)
  res.writeHead(ge.statusCode, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    connection: 'close'
  })
  res.end(body)
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
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    refused(log, 'expectation', 417, req.socket.remoteAddress)
    answer(res, 'EXPECTATION_FAILED')
  })
  // A forward proxy's method: not ours. Without a listener Node just drops the socket.
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    refused(log, 'connect', 405, req.socket.remoteAddress)
    socket.on('error', () => socket.destroy())
    endWithEnvelope(socket, 'METHOD_NOT_ALLOWED')
  })
  return server
}
