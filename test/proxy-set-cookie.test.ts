/**
 * Only the gateway sets its browser-login cookie (`__Host-wegate_wx_login`): a
 * backend's Set-Cookie for that name — a compromised service, or a Set-Cookie
 * injection in one — never reaches the browser, on a proxied response, a
 * WebSocket handshake (101) or a refused handshake. Proxied responses come from
 * the gateway's host, so the `__Host-` prefix alone would not stop a backend
 * from planting an attacker's login cookie (login CSRF) or clearing a login in
 * progress. The backend's other cookies pass untouched.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { request } from 'undici'
import WebSocket, { WebSocketServer } from 'ws'
import { startGateway } from './helpers/gateway.js'
import { startServer } from './helpers/upstream.js'

const LOGIN = '__Host-wegate_wx_login'
const PLANT = [
  `${LOGIN}=${'a'.repeat(43)}; Path=/; Secure; HttpOnly; SameSite=Lax`,
  `${LOGIN.toLowerCase()}=${'b'.repeat(43)}; Path=/; Secure`,
  ` ${LOGIN}=; Max-Age=0; Path=/; Secure`
]
const KEEP = ['theme=dark; Path=/', `note=${LOGIN}; Path=/`]

const http = await startServer(t, (req, res) => {
  req.resume()
  if (req.url?.includes('/only') === true) res.setHeader('set-cookie', PLANT[0])
  else res.setHeader('set-cookie', [...PLANT, ...KEEP])
  res.end('ok')
})

// A ws upstream that adds the cookies to its 101, and refuses /ws/no with a 403 carrying them.
const server = createServer()
const wss = new WebSocketServer({ noServer: true })
wss.on('headers', (headers) => { for (const c of [...PLANT, ...KEEP]) headers.push(`Set-Cookie: ${c}`) })
server.on('upgrade', (req, socket, head) => {
  if (req.url?.startsWith('/ws/no') === true) {
    socket.end(['HTTP/1.1 403 Forbidden', ...[...PLANT, ...KEEP].map((c) => `Set-Cookie: ${c}`), 'Content-Length: 2', '', 'no'].join('\r\n'))
    return
  }
  wss.handleUpgrade(req, socket, head, (ws) => { ws.on('message', (m) => ws.send(m)) })
})
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
t.teardown(async () => {
  for (const c of wss.clients) c.terminate()
  server.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
})
const wsUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

const gw = await startGateway(t, {
  routes: [
    { name: 'api', prefix: '/api', auth: 'public', upstreams: [{ name: 'v1', url: http.url, weight: 1 }] },
    { name: 'live', prefix: '/ws', auth: 'public', upstreams: [{ name: 'v1', url: wsUrl, weight: 1 }] }
  ]
})

const cookiesOf = (v: string | string[] | undefined): string[] => v === undefined ? [] : Array.isArray(v) ? v : [v]

t.test('a proxied response: the backend\'s login-cookie lines are dropped, its other cookies kept', async (t) => {
  const r = await request(`${gw.url}/api/x`)
  t.equal(r.statusCode, 200)
  t.same(cookiesOf(r.headers['set-cookie']), KEEP)
  await r.body.text()
  const only = await request(`${gw.url}/api/only`)
  t.equal(only.headers['set-cookie'], undefined, 'the login cookie alone: no Set-Cookie at all')
  await only.body.text()
})

t.test('a WebSocket handshake (101) and a refused one: the same', async (t) => {
  const ws = new WebSocket(`${gw.url.replace('http://', 'ws://')}/ws/room`)
  const upgraded = await new Promise<string[]>((resolve, reject) => {
    ws.once('upgrade', (res) => resolve(cookiesOf(res.headers['set-cookie'])))
    ws.once('error', reject)
  })
  t.same(upgraded, KEEP)
  ws.terminate()

  const refused = new WebSocket(`${gw.url.replace('http://', 'ws://')}/ws/no`)
  const answer = await new Promise<{ status: number, cookies: string[] }>((resolve, reject) => {
    refused.once('unexpected-response', (_req, res) => { res.resume(); resolve({ status: res.statusCode ?? 0, cookies: cookiesOf(res.headers['set-cookie']) }) })
    refused.once('error', reject)
  })
  t.equal(answer.status, 403, 'the backend\'s refusal is relayed')
  t.same(answer.cookies, KEEP)
  refused.terminate()
})
