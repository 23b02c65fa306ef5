/**
 * An envelope answer written straight to a socket, for exchanges that never
 * became a Fastify response: connection-level client errors (431, 408, bad
 * bytes) and refused WebSocket handshakes. The connection is closed after it.
 */
import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import { envelopeText, type GatewayError } from '../errors.js'

/** Write `ge` as an HTTP/1.1 envelope response on `socket` (with the request id when there is one), then close. */
export function writeRawEnvelope (socket: Duplex, ge: GatewayError, requestId?: string): void {
  if (!socket.writable) {
    socket.destroy()
    return
  }
  // The server socket is half-open capable: do not wait for the client's FIN.
  socket.once('finish', () => socket.destroy())
  const body = envelopeText(ge)
  let extra = requestId === undefined ? '' : `X-Request-Id: ${requestId}\r\n`
  if (ge.headers !== undefined) for (const [k, v] of Object.entries(ge.headers)) extra += `${k}: ${v}\r\n`
  socket.end(
    `HTTP/1.1 ${ge.statusCode} ${STATUS_CODES[ge.statusCode] ?? ''}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` + extra +
    'Connection: close\r\n\r\n' + body
  )
}
