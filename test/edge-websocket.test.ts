/**
 * End to end WebSocket through the gateway: the handshake is routed,
 * authenticated and split like any request, identity headers are set from the
 * token (client copies stripped), frames flow both ways, and every refusal or
 * upstream failure is an HTTP answer on the socket — never a crash or a hang.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { request } from 'undici'
import WebSocket from 'ws'
import { ErrorCatalog } from '../src/errors.js'
import { startGateway, type TestContext } from './helpers/gateway.js'
import { closedPort, rawRequest, startServer } from './helpers/upstream.js'
import { closeWs, openWs, roundTrip, startWsUpstream, waitUntil } from './helpers/websocket.js'

/** A gateway (app.ts wires the WebSocket proxy on its public listener). */
async function wsGateway (t: TestContext, routes: unknown[]) {
  return await startGateway(t, { routes })
}

const stable = await startWsUpstream(t, 'stable')
const canary = await startWsUpstream(t, 'canary')
const refusedPort = await closedPort()
const denying = await startServer(t, (_req, res) => { res.end() })
denying.server.on('upgrade', (_req, socket) => {
  socket.end('HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nX-From: service\r\n\r\nnot for you!')
})
const silent = await startServer(t, (_req, res) => { res.end() })
const silentSockets = new Set<import('node:stream').Duplex>()
silent.server.on('upgrade', (_req, socket) => {
  // Never answers; upgraded sockets are not closed by server.closeAllConnections().
  silentSockets.add(socket)
  socket.on('error', () => {})
  socket.on('end', () => socket.destroy())
})
t.teardown(() => { for (const s of silentSockets) s.destroy() })

const { gateway, url, logs } = await wsGateway(t, [
  {
    name: 'chat',
    prefix: '/ws/chat',
    auth: 'required',
    upstreams: [{ name: 'stable', url: stable.url, weight: 50 }, { name: 'canary', url: canary.url, weight: 50 }],
    canary: { sticky: 'openid', header: 'X-Canary' }
  },
  { name: 'live', prefix: '/ws/live', auth: 'public', stripPrefix: true, upstreams: [{ name: 'stable', url: `${stable.url}/base`, weight: 1 }] },
  { name: 'denied', prefix: '/ws/denied', auth: 'public', upstreams: [{ name: 'd', url: denying.url, weight: 1 }] },
  { name: 'down', prefix: '/ws/down', auth: 'public', upstreams: [{ name: 'down', url: `http://127.0.0.1:${refusedPort}`, weight: 1 }] },
  { name: 'silent', prefix: '/ws/silent', auth: 'public', timeout: '300ms', upstreams: [{ name: 'silent', url: silent.url, weight: 1 }] }
])
const wsUrl = url.replace('http://', 'ws://')
const tokens = gateway.snapshot().tokens
const bearer = (openid: string) => `Bearer ${tokens.signAccess({ openid, appid: 'wx00000000000demo0', fid: `f-${openid}` }).token}`

/** Connect; resolves with the open socket, or the refusal (status, headers, body). */
async function connectWs (path: string, headers: Record<string, string> = {}, protocols: string[] = []) {
  return await openWs(url, path, headers, protocols)
}

t.test('an authenticated socket is proxied: frames both ways, identity from the token only', async (t) => {
  const before = stable.handshakes.length + canary.handshakes.length
  const { ws, status } = await connectWs('/ws/chat/room1?since=42', {
    authorization: bearer('oAlice'), 'x-openid': 'oMallory', X_OpenID: 'oMallory2', 'x-appid': 'wxMallory', 'x-request-id': 'ws-trace-1'
  }, ['chat.v1'])
  t.equal(status, 101)
  t.equal(ws.protocol, 'chat.v1', 'subprotocol negotiated end to end')
  const reply = await roundTrip(ws, 'hello 你好')
  t.match(reply, /^(stable|canary):hello 你好$/)
  const bin = Buffer.alloc(256 * 1024, 7)
  t.same(await roundTrip(ws, bin), bin, 'a 256 KiB binary frame comes back intact')
  const hs = [...stable.handshakes, ...canary.handshakes].slice(before)
  t.equal(hs.length, 1)
  const h = hs[0].headers
  t.equal(hs[0].url, '/ws/chat/room1?since=42')
  t.equal(h['x-openid'], 'oAlice')
  t.equal(h['x-appid'], 'wx00000000000demo0')
  t.equal(h.x_openid, undefined)
  t.equal(h.authorization, undefined, 'Authorization not forwarded by default')
  t.equal(h['x-request-id'], 'ws-trace-1')
  t.equal(h['x-forwarded-for'], '127.0.0.1')
  await closeWs(ws)
})

t.test('the handshake needs a valid token on a required route: 401 envelope, upstream untouched', async (t) => {
  const before = stable.handshakes.length + canary.handshakes.length
  const missing = await connectWs('/ws/chat/room1')
  t.equal(missing.status, 401)
  t.same(JSON.parse(missing.body), { code: ErrorCatalog.TOKEN_MISSING.code, message: ErrorCatalog.TOKEN_MISSING.message, data: null })
  t.ok(typeof missing.headers['x-request-id'] === 'string')
  const forged = await connectWs('/ws/chat/room1', { authorization: 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.' })
  t.equal(forged.status, 401)
  t.equal(JSON.parse(forged.body).code, ErrorCatalog.TOKEN_BAD_SIGNATURE.code, 'alg none refused')
  t.equal(stable.handshakes.length + canary.handshakes.length, before)
})

t.test('public route with stripPrefix: no token, spoofed identity removed', async (t) => {
  const before = stable.handshakes.length
  const { ws, status } = await connectWs('/ws/live/feed', { 'X-OpenID': 'oMallory' })
  t.equal(status, 101)
  t.equal(await roundTrip(ws, 'hi'), 'stable:hi')
  const h = stable.handshakes[before]
  t.equal(h.url, '/base/feed')
  t.equal(h.headers['x-openid'], undefined)
  await closeWs(ws)
})

t.test('no route → 404, unsafe path → 400, both as envelopes', async (t) => {
  const none = await connectWs('/nowhere')
  t.equal(none.status, 404)
  t.equal(JSON.parse(none.body).code, ErrorCatalog.NO_ROUTE.code)
  const bad = await connectWs('/ws/live/a%2F..%2Fb')
  t.equal(bad.status, 400)
  t.equal(JSON.parse(bad.body).code, ErrorCatalog.BAD_PATH.code)
})

t.test('the same picker as HTTP: tester header override and sticky openid', async (t) => {
  const forced = await connectWs('/ws/chat/x', { authorization: bearer('oAlice'), 'x-canary': 'canary' })
  t.equal(await roundTrip(forced.ws, 'a'), 'canary:a')
  await closeWs(forced.ws)
  const forcedStable = await connectWs('/ws/chat/x', { authorization: bearer('oAlice'), 'x-canary': 'stable' })
  t.equal(await roundTrip(forcedStable.ws, 'a'), 'stable:a')
  await closeWs(forcedStable.ws)
  for (const openid of ['oU1', 'oU2', 'oU3']) {
    const seen = new Set<string>()
    for (let i = 0; i < 5; i++) {
      const c = await connectWs('/ws/chat/x', { authorization: bearer(openid) })
      seen.add(String(await roundTrip(c.ws, 'p')).split(':')[0])
      await closeWs(c.ws)
    }
    t.equal(seen.size, 1, `${openid} sticks to ${[...seen].join()}`)
  }
})

t.test('regression: the upstream\'s own X-Request-Id reached the client instead of the gateway\'s', async (t) => {
  const own = await startWsUpstream(t, 'own')
  own.wss.on('headers', (headers) => { headers.push('X-Request-Id: upstream-own-id') })
  const refusing = await startServer(t, (_req, res) => { res.end() })
  refusing.server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nX-Request-Id: upstream-own-id\r\nContent-Length: 0\r\n\r\n')
  })
  const gw = await wsGateway(t, [
    { name: 'own', prefix: '/own', auth: 'public', upstreams: [{ name: 'own', url: own.url, weight: 1 }] },
    { name: 'no', prefix: '/no', auth: 'public', upstreams: [{ name: 'no', url: refusing.url, weight: 1 }] }
  ])
  const base = gw.url.replace('http://', 'ws://')
  const answer = async (path: string) => await new Promise<{ ws: WebSocket, status: number, id: unknown }>((resolve, reject) => {
    const ws = new WebSocket(`${base}${path}`, { headers: { 'x-request-id': `ws-${path.slice(1)}` } })
    let id: unknown
    ws.once('upgrade', (res) => { id = res.headers['x-request-id'] })
    ws.once('open', () => resolve({ ws, status: 101, id }))
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve({ ws, status: res.statusCode ?? 0, id: res.headers['x-request-id'] }) })
    ws.once('error', reject)
  })
  const up = await answer('/own')
  t.equal(up.status, 101)
  t.equal(up.id, 'ws-own', '101: the gateway\'s id')
  await closeWs(up.ws)
  const no = await answer('/no')
  t.equal(no.status, 403)
  t.equal(no.id, 'ws-no', 'a declined upgrade: the gateway\'s id')
  t.equal(gw.logs.lines.find((l) => l.msg === 'access' && l.path === '/no')?.reqId, 'ws-no', 'the access line has the same id')
})

t.test('an upstream that refuses the upgrade: its answer is relayed', async (t) => {
  const r = await connectWs('/ws/denied/x')
  t.equal(r.status, 403)
  t.equal(r.body, 'not for you!')
  t.equal(r.headers['x-from'], 'service')
})

t.test('upstream down → 502 envelope; no handshake answer in time → 504 envelope', async (t) => {
  const down = await connectWs('/ws/down/x')
  t.equal(down.status, 502)
  const downBody = JSON.parse(down.body) as { data: { traceId: string } }
  t.same(downBody, { code: ErrorCatalog.UPSTREAM_UNAVAILABLE.code, message: ErrorCatalog.UPSTREAM_UNAVAILABLE.message, data: { traceId: downBody.data.traceId } })
  t.match(downBody.data.traceId, /^[0-9a-f]{32}$/, 'a 5xx carries its trace id')
  const slow = await connectWs('/ws/silent/x')
  t.equal(slow.status, 504)
  t.equal(JSON.parse(slow.body).code, ErrorCatalog.UPSTREAM_TIMEOUT.code)
})

t.test('closing either side closes the other', async (t) => {
  const a = await connectWs('/ws/live/x')
  const code = new Promise<number>((resolve) => a.ws.once('close', (c) => resolve(c)))
  a.ws.send('bye')
  t.equal(await code, 4001, 'upstream close code reaches the client')
  const b = await connectWs('/ws/live/x')
  const closesBefore = stable.closes.length
  await roundTrip(b.ws, 'x')
  await closeWs(b.ws)
  await waitUntil(() => stable.closes.length > closesBefore)
  t.ok(stable.closes.length > closesBefore, 'the upstream saw the client close')
})

t.test('a client that vanishes mid-handshake or mid-stream does not hurt the gateway', async (t) => {
  // Reset while the upstream has not answered yet.
  const ws = new WebSocket(`${wsUrl}/ws/silent/x`)
  ws.on('error', () => {})
  await sleep(50)
  ws.terminate()
  // Reset an open tunnel.
  const open = await connectWs('/ws/live/x')
  open.ws.terminate()
  const after = await connectWs('/ws/live/x')
  t.equal(await roundTrip(after.ws, 'still'), 'stable:still')
  await closeWs(after.ws)
  t.equal((await request(`${url}/nowhere`)).statusCode, 404, 'HTTP still served')
})

t.test('a non-WebSocket upgrade is refused with 400', async (t) => {
  const res = await rawRequest(url, 'GET /ws/live/x HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n')
  t.equal(res.status, 400)
  t.equal(JSON.parse(res.body).code, ErrorCatalog.BAD_REQUEST.code)
})

t.test('handshakes are logged as access lines with route and upstream', async (t) => {
  const lines = logs.lines.filter((l) => l.msg === 'access' && l.websocket === true)
  t.ok(lines.some((l) => l.route === 'chat' && (l.upstream === 'stable' || l.upstream === 'canary') && l.status === 101))
  t.ok(lines.some((l) => l.route === 'down' && l.status === 502))
  t.notMatch(logs.text(), /eyJ/, 'no token in the log')
})

t.test('shutdown with an open tunnel completes and closes the client', async (t) => {
  const own = await wsGateway(t, [{ name: 'live', prefix: '/', auth: 'public', upstreams: [{ name: 's', url: stable.url, weight: 1 }] }])
  const ws = new WebSocket(own.url.replace('http://', 'ws://') + '/x')
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()))
  ws.on('error', () => {})
  await own.gateway.shutdown()
  await closed
  t.pass('shutdown finished and the socket closed')
})

t.test('regression: an idle tunnel outlives the route timeout and the client request timeouts', async (t) => {
  const own = await startGateway(t, {
    limits: { headersTimeout: '300ms', requestTimeout: '500ms', keepAliveTimeout: '300ms' },
    routes: [{ name: 'live', prefix: '/', auth: 'public', timeout: '300ms', upstreams: [{ name: 's', url: stable.url, weight: 1 }] }]
  })
  const ws = new WebSocket(own.url.replace('http://', 'ws://') + '/idle')
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  let closed = false
  ws.once('close', () => { closed = true })
  await sleep(1200)
  t.notOk(closed, 'still open after 1.2 s idle')
  t.equal(await roundTrip(ws, 'later'), 'stable:later')
  await closeWs(ws)
})
