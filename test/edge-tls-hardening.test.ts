/**
 * TLS hardening of the public listener: no client-initiated renegotiation, and
 * session ticket keys that are replaced on a timer (a ticket from before the
 * rotation no longer resumes a session).
 */
import { connect as tlsConnect, type ConnectionOptions, type Server as TlsListener, type TLSSocket } from 'node:tls'
import { type AddressInfo } from 'node:net'
import pino from 'pino'
import t from 'tap'
import { loadTlsMaterial } from '../src/config/tls.js'
import { createTlsHttpServer } from '../src/gateway/http-server.js'
import { createMetrics } from '../src/metrics/index.js'
import { startGateway } from './helpers/gateway.js'
import { createTestCa } from './helpers/tls.js'
import { waitUntil } from './helpers/wait.js'

const ca = await createTestCa(t)
const served = await ca.issue('server')
const tls = { certFile: served.certFile, keyFile: served.keyFile }

async function open (port: number, extra: ConnectionOptions = {}): Promise<TLSSocket> {
  return await new Promise((resolve, reject) => {
    const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port, ca: ca.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'], maxVersion: 'TLSv1.2', ...extra }, () => resolve(socket))
    socket.on('error', reject)
  })
}

t.test('TLS 1.2 client-initiated renegotiation is refused', async (t) => {
  const gw = await startGateway(t, { listen: { host: '127.0.0.1', port: 0, tls }, shutdown: { delay: '0s', timeout: '300ms' } })
  const socket = await open(Number(new URL(gw.url).port))
  const outcome = await new Promise<string>((resolve) => {
    socket.on('error', (err) => resolve(`error: ${err.message}`))
    socket.on('close', () => resolve('closed'))
    const ok = socket.renegotiate({ rejectUnauthorized: true }, (err) => resolve(err === null ? 'renegotiated' : `error: ${err.message}`))
    if (!ok) resolve('not started')
    setTimeout(() => resolve('no answer'), 2000).unref()
  })
  socket.destroy()
  t.not(outcome, 'renegotiated', `refused (${outcome})`)
})

t.test('TLS 1.2 session tickets resume a session until their key is rotated', async (t) => {
  const material = await loadTlsMaterial(tls, 'test.yaml')
  const log = { metrics: createMetrics(), logger: pino({ level: 'silent' }) }
  const server = createTlsHttpServer({ headerSize: 16384, requestTimeout: 5000, headersTimeout: 5000, keepAliveTimeout: 5000 } as never,
    (_req, res) => res.end('ok'), log, material, { ticketKeyRotationMs: 300 })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => { server.closeAllConnections(); await new Promise((resolve) => server.close(resolve)) })
  const port = (server.address() as AddressInfo).port
  // TLS 1.2: the ticket is part of the handshake.
  const ticketed = async (extra: ConnectionOptions = {}): Promise<{ session: Buffer, reused: boolean }> => {
    const socket = await open(port, extra)
    const reused = socket.isSessionReused()
    const session = socket.getSession()
    socket.destroy()
    if (session === undefined) throw new Error('no session')
    return { session, reused }
  }
  const front = server as unknown as TlsListener
  const keys = front.getTicketKeys()
  const first = await ticketed()
  t.notOk(first.reused, 'a full handshake first')
  t.ok((await ticketed({ session: first.session })).reused, 'the ticket resumes the session')
  await waitUntil(() => !front.getTicketKeys().equals(keys), 3000)
  t.notOk((await ticketed({ session: first.session })).reused, 'after the rotation the old ticket is refused (full handshake)')
})
