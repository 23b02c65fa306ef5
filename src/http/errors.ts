/**
 * One place turns every failure the gateway answers itself into the
 * `{code, message, data}` envelope: our GatewayErrors, Fastify's own errors
 * (bad JSON, validation, body too large, media type) and connection-level
 * client errors (431, 408) that never reach a route.
 */
import type { Duplex } from 'node:stream'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { GatewayError, type ErrorName } from '../errors.js'
import { envelopeBody, writeRawEnvelope } from './raw-envelope.js'

const FASTIFY_CODES: Record<string, ErrorName> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BAD_REQUEST',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BAD_REQUEST',
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_BAD_URL: 'BAD_PATH',
  FST_ERR_ASYNC_CONSTRAINT: 'BAD_REQUEST'
}

const STATUS_NAMES: Partial<Record<number, ErrorName>> = {
  400: 'BAD_REQUEST',
  404: 'NO_ROUTE',
  405: 'METHOD_NOT_ALLOWED',
  408: 'REQUEST_TIMEOUT',
  413: 'BODY_TOO_LARGE',
  415: 'UNSUPPORTED_MEDIA_TYPE',
  431: 'HEADERS_TOO_LARGE'
}

/** Translate anything thrown into a GatewayError; unknown errors become INTERNAL. */
export function toGatewayError (err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  const fe = err as Partial<FastifyError> & { validation?: Array<{ instancePath?: string, message?: string }>, validationContext?: string }
  if (Array.isArray(fe.validation)) {
    const errors = fe.validation.map((v) => ({
      path: `${fe.validationContext ?? 'body'}${(v.instancePath ?? '').replace(/\//g, '.')}`,
      message: v.message ?? 'is invalid'
    }))
    const first = errors[0]
    return new GatewayError('VALIDATION_FAILED', {
      message: first === undefined ? undefined : `${first.path} ${first.message}`,
      data: { errors },
      cause: err
    })
  }
  const name = (fe.code !== undefined ? FASTIFY_CODES[fe.code] : undefined) ??
    (typeof fe.statusCode === 'number' && fe.statusCode < 500 ? STATUS_NAMES[fe.statusCode] ?? 'BAD_REQUEST' : 'INTERNAL')
  return new GatewayError(name, { cause: err })
}

/** Fastify error handler: log with cause for the operator, envelope for the client. */
export function handleError (err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const ge = toGatewayError(err)
  if (ge.statusCode >= 500) {
    request.log.error({ err: ge.cause ?? ge, code: ge.code, detail: ge.detail, traceId: request.trace?.traceId }, ge.detail ?? 'request failed')
  } else if (ge.detail !== undefined) {
    // The access line already carries the code; the why is for debugging (a 401 flood must not double the log).
    request.log.debug({ code: ge.code, detail: ge.detail }, 'request rejected')
  }
  return sendError(reply, ge)
}

export function sendError (reply: FastifyReply, ge: GatewayError): FastifyReply {
  reply.request.errorCode = ge.code
  reply.code(ge.statusCode)
  if (ge.headers !== undefined) reply.headers(ge.headers)
  reply.header('content-type', 'application/json; charset=utf-8')
  return reply.send(envelopeBody(ge, reply.request.trace?.traceId))
}

/** The envelope a connection-level client error gets; undefined when the peer is gone (nothing to answer). */
export function clientErrorName (err: NodeJS.ErrnoException & { code?: string }): ErrorName | undefined {
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE') return undefined
  return err.code === 'HPE_HEADER_OVERFLOW'
    ? 'HEADERS_TOO_LARGE'
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'ERR_HTTP_HEADERS_TIMEOUT'
      ? 'REQUEST_TIMEOUT'
      : 'BAD_REQUEST'
}

/**
 * Errors on the raw connection (header overflow, request timeout, garbage
 * bytes) happen before Fastify has a request: answer with an envelope on the
 * socket and close it, as Node would, instead of Node's bare status line.
 */
export function handleClientError (err: NodeJS.ErrnoException & { code?: string }, socket: Duplex): void {
  const name = clientErrorName(err)
  if (name === undefined || !socket.writable) {
    socket.destroy()
    return
  }
  endWithEnvelope(socket, name)
}

/** Answer on a raw socket (no HTTP response object exists) with the envelope, and close it. */
export function endWithEnvelope (socket: Duplex, name: ErrorName): void {
  writeRawEnvelope(socket, new GatewayError(name))
}
