/**
 * WebSocket plumbing for the tunnel tests: a `ws` echo upstream that records
 * handshakes and closes, and a real `ws` client that resolves with the open
 * socket or the gateway's refusal.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import WebSocket, { WebSocketServer } from 'ws'
import type { TestContext } from './gateway.js'

export { waitUntil } from './wait.js'

export interface Handshake { url: string, headers: IncomingHttpHeaders }

export interface WsUpstream {
  url: string
  handshakes: Handshake[]
  /** Close code and reason of every socket that closed, as the upstream saw them. */
  closes: Array<{ code: number, reason: string }>
  /** Plain HTTP requests answered. */
  http: { count: number }
  wss: WebSocketServer
}

/** A ws echo upstream: replies `<name>:<message>` (binary frames as they came), closes with 4001 on `bye`. */
export async function startWsUpstream (t: TestContext, name: string): Promise<WsUpstream> {
  const http = { count: 0 }
  const server = createServer((_req, res) => { http.count++; res.setHeader('x-upstream', name); res.end(name) })
  const wss = new WebSocketServer({ server })
  const handshakes: Handshake[] = []
  const closes: WsUpstream['closes'] = []
  wss.on('connection', (socket, req) => {
    handshakes.push({ url: req.url ?? '', headers: req.headers })
    socket.on('message', (data, isBinary) => {
      if (!isBinary && data.toString() === 'bye') { socket.close(4001, 'bye from upstream'); return }
      socket.send(isBinary ? data : `${name}:${data.toString()}`, { binary: isBinary })
    })
    socket.on('close', (code, reason) => closes.push({ code, reason: reason.toString() }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate()
    wss.close()
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, handshakes, closes, http, wss }
}

export interface Opened { ws: WebSocket, status: number, body: string, headers: IncomingHttpHeaders }

/** Connect to `base` (http://…) + path; resolves with the open socket (101), or the refusal: status, headers, body. */
export async function openWs (base: string, path: string, headers: Record<string, string> = {}, protocols: string[] = []): Promise<Opened> {
  const ws = new WebSocket(`${base.replace('http://', 'ws://')}${path}`, protocols, { headers })
  return await new Promise<Opened>((resolve, reject) => {
    ws.once('open', () => resolve({ ws, status: 101, body: '', headers: {} }))
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ ws, status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    ws.once('error', reject)
  })
}

/** Send one message and resolve with the next one received. */
export async function roundTrip (ws: WebSocket, data: string | Buffer): Promise<string | Buffer> {
  return await new Promise((resolve) => {
    ws.once('message', (m, isBinary) => resolve(isBinary ? Buffer.from(m as Buffer) : (m as Buffer).toString()))
    ws.send(data)
  })
}

/** Close from the client side and wait for the close handshake. */
export async function closeWs (ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return
  await new Promise<void>((resolve) => { ws.once('close', () => resolve()); ws.close() })
}

/** Resolves when `ws` closes, with the code and reason the client got; rejects if it stays open `timeoutMs`. */
export async function closed (ws: WebSocket, timeoutMs = 5000): Promise<{ code: number, reason: string }> {
  if (ws.readyState === WebSocket.CLOSED) throw new Error('already closed')
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`still open after ${timeoutMs} ms`)), timeoutMs)
    ws.once('close', (code, reason) => { clearTimeout(timer); resolve({ code, reason: reason.toString() }) })
  })
}
