/**
 * The request id: a sane client `X-Request-Id` is kept (so traces join up
 * across hops), anything else replaced by a new UUID. The same id goes upstream,
 * back to the client and into every log line of the request, HTTP or WebSocket.
 */
import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'

// Safe to log and echo: 1-128 of [A-Za-z0-9._:@-].
const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/

/** The id for this request (Fastify's genReqId, and the WebSocket handshake's). */
export function requestId (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}
