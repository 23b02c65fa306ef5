/**
 * An envelope answer written straight to a socket, for exchanges that never
 * became a Fastify response: connection-level client errors (431, 408, bad
 * bytes) and refused WebSocket handshakes. The connection is closed after it.
 */
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { envelopeOf, envelopeText, type GatewayError } from '../errors.js'

/**
 * The envelope's text; a 5xx carries the request's trace id in `data.traceId`, so
 * a user's screenshot of the error leads to the access line and the backends' traces.
 */
export function envelopeBody (ge: GatewayError, traceId: string | undefined): string {
  if (traceId === undefined || traceId === '' || ge.statusCode < 500) return envelopeText(ge)
  const envelope = envelopeOf(ge)
  return JSON.stringify({ ...envelope, data: { ...envelope.data, traceId } })
}

/** Write `ge` as an HTTP/1.1 envelope response on `socket` (with the request id when there is one), then close. */
export function writeRawEnvelope (socket: Duplex, ge: GatewayError, requestId?: string, traceId?: string): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  // The server socket is half-open capable: do not wait for the client's FIN.
  socket.once('finish', () => socket.destroy())
  const body = envelopeBody(ge, traceId)
  let extra = requestId === undefined ? '' : `X-Request-Id: ${requestId}\r\n`
  if (ge.headers !== undefined) for (const [k, v] of Object.entries(ge.headers)) extra += `${k}: ${v}\r\n`
  socket.end(
    `HTTP/1.1 ${ge.statusCode} ${STATUS_CODES[ge.statusCode] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` + extra +
    'Connection: close\r\n\r\n' + body
  )
}
