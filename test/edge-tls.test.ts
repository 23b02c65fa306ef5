/**
 * TLS and HTTP/2 on the public listener (`listen.tls`), end to end on real
 * sockets with a CA made for the test: HTTPS over HTTP/1.1 and HTTP/2 through
 * login and proxying (identity headers set, spoofed ones stripped), ALPN,
 * old protocol versions refused, envelopes and rate limits over h2, wss://,
 * the certificate expiry metric and a graceful drain of h2 sessions.
 */
import { connect as h2connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls'
import t from 'tap'
import { Agent, request } from 'undici'
import WebSocket from 'ws'
import { APP_A, metric, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { createTestCa } from './helpers/tls.js'
import { startEcho as startBodyEcho, startServer } from './helpers/upstream.js'
import { closeWs, startWsUpstream } from './helpers/websocket.js'
import { waitUntil } from './helpers/wait.js'

const ca = await createTestCa(t)
const served = await ca.issue('server')
const wechat = await startWeChat(t)
const echoUrl = await startEcho(t)
const wsUpstream = await startWsUpstream(t, 'ws')
const bodyEcho = await startBodyEcho(t, 'small')
// An HTTP/1.1 upstream answering with every connection-specific header HTTP/2 forbids, chunked.
const chatty = await startServer(t, (req, res) => {
  req.resume()
  req.on('end', () => {
    res.setHeader('connection', 'keep-alive, x-dropped')
    res.setHeader('keep-alive', 'timeout=5')
    res.setHeader('proxy-connection', 'keep-alive')
    res.setHeader('x-dropped', 'named in Connection')
    res.setHeader('x-kept', 'yes')
    res.setHeader('set-cookie', ['a=1', 'b=2'])
    res.write('part one, ')
    res.end('part two')
  })
})
const tls = { certFile: served.certFile, keyFile: served.keyFile }
const { url, adminUrl, logs } = await startAuthGateway(t, {
  wechatUrl: wechat.url,
  echoUrl,
  patch: {
    listen: { host: '127.0.0.1', port: 0, tls },
    routes: [
      { name: 'echo', prefix: '/api', auth: 'required', upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] },
      { name: 'limited', prefix: '/limited', auth: 'public', rateLimit: { max: 2, window: '1m', by: 'ip' }, upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] },
      { name: 'chat', prefix: '/chat', auth: 'public', upstreams: [{ name: 'v1', url: wsUpstream.url, weight: 1 }] },
      { name: 'chatty', prefix: '/chatty', auth: 'public', upstreams: [{ name: 'v1', url: chatty.url, weight: 1 }] },
      { name: 'small', prefix: '/small', auth: 'public', bodyLimit: '1kb', upstreams: [{ name: 'v1', url: bodyEcho.url, weight: 1 }] }
    ]
  }
})
const { port } = new URL(url)
const h1 = new Agent({ connect: { ca: ca.ca } })
t.teardown(async () => await h1.close())

interface H2Answer { status: number, headers: IncomingHttpHeaders, text: string, json: any }

/** One request on an HTTP/2 session. */
async function h2 (session: ClientHttp2Session, method: string, path: string, headers: Record<string, string> = {}, body?: string): Promise<H2Answer> {
  return await new Promise((resolve, reject) => {
    const stream = session.request({ ':method': method, ...(method === 'CONNECT' ? {} : { ':path': path }), ...headers }, { endStream: body === undefined && method !== 'CONNECT' })
    let got: IncomingHttpHeaders = {}
    const chunks: Buffer[] = []
    stream.on('response', (h) => { got = h })
    stream.on('data', (c: Buffer) => chunks.push(c))
    stream.on('error', reject)
    stream.on('close', () => { if (got[':status'] === undefined) reject(new Error(`no response (stream closed, code ${stream.rstCode ?? '?'})`)) })
    stream.on('end', () => {
      if (got[':status'] === undefined) return
      const text = Buffer.concat(chunks).toString('utf8')
      let json: unknown
      try { json = JSON.parse(text) } catch {}
      resolve({ status: Number(got[':status']), headers: got, text, json })
    })
    if (body !== undefined) stream.end(body)
  })
}

async function h2session (t: { teardown: (fn: () => unknown) => void }): Promise<ClientHttp2Session> {
  const session = h2connect(url, { ca: ca.ca })
  t.teardown(() => session.destroy())
  await new Promise<void>((resolve, reject) => { session.once('connect', () => resolve()); session.once('error', reject) })
  return session
}

/** The protocol the server picks from what the client offers (false: no ALPN). */
async function alpn (offer: string[] | undefined, extra: ConnectionOptions = {}): Promise<string | false> {
  return await new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: ca.ca, servername: 'localhost', ...(offer === undefined ? {} : { ALPNProtocols: offer }), ...extra }, () => {
      const chosen = socket.alpnProtocol ?? false
      socket.destroy()
      resolve(chosen)
    })
    socket.on('error', reject)
  })
}

t.test('the listener speaks HTTPS: its URL, ALPN picks h2 when offered and http/1.1 otherwise', async (t) => {
  t.match(url, /^https:\/\//)
  t.equal(await alpn(['h2', 'http/1.1']), 'h2')
  t.equal(await alpn(['http/1.1']), 'http/1.1')
  t.equal(await alpn(undefined), false, 'a client without ALPN gets HTTP/1.1')
  const plain = await request(`${url.replace('https:', 'http:')}/healthz`).then(() => 'answered', (err: Error) => err.message)
  t.not(plain, 'answered', 'plain HTTP on the TLS port gets no HTTP answer')
})

t.test('TLS 1.0 and 1.1 are refused (and counted), 1.2 and 1.3 accepted', async (t) => {
  const before = await metric(adminUrl, 'wegate_http_parser_errors_total', { reason: 'tls_handshake' })
  // SECLEVEL=0: this client would speak TLS 1.0/1.1 — the refusal must be the server's
  for (const version of ['TLSv1', 'TLSv1.1'] as const) {
    await t.rejects(alpn(['http/1.1'], { minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' }), /version|alert/i, `${version} refused`)
  }
  await waitUntil(async () => await metric(adminUrl, 'wegate_http_parser_errors_total', { reason: 'tls_handshake' }) >= before + 2)
  t.equal(await alpn(['http/1.1'], { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), 'http/1.1', 'TLS 1.2')
  t.equal(await alpn(['http/1.1'], { minVersion: 'TLSv1.3' }), 'http/1.1', 'TLS 1.3')
  // A TLS 1.2 client offering only CBC / RSA key exchange suites finds none in common.
  await t.rejects(alpn(['http/1.1'], { maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA:AES256-GCM-SHA384:ECDHE-RSA-AES128-SHA' }), /handshake|cipher|alert/i, 'no CBC or non-ECDHE suite on 1.2')
})

t.test('HTTPS over HTTP/1.1: login, then a proxied call with X-OpenID set and a spoofed one stripped', async (t) => {
  const loginRes = await request(`${url}/auth/login`, { dispatcher: h1, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: 'u-alice-h1' }) })
  const login = await loginRes.body.json() as { code: number, data: { accessToken: string, openid: string } }
  t.equal(loginRes.statusCode, 200)
  t.equal(login.code, 200)
  const res = await request(`${url}/api/me`, { dispatcher: h1, headers: { authorization: `Bearer ${login.data.accessToken}`, 'x-openid': 'oMallory', X_OpenID: 'oMallory2' } })
  t.equal(res.statusCode, 200)
  const echo = await res.body.json() as { headers: Record<string, string> }
  t.equal(echo.headers['x-openid'], login.data.openid)
  t.equal(echo.headers['x-appid'], APP_A.appId)
  t.notMatch(JSON.stringify(echo.headers), /Mallory/)
  t.equal(echo.headers['x-forwarded-proto'], 'https', 'the upstream learns the client used HTTPS')
  t.equal(echo.headers['x-forwarded-host'], `127.0.0.1:${port}`)
})

t.test('HTTP/2: login, proxying, refresh and logout behave as over HTTP/1.1', async (t) => {
  const session = await h2session(t)
  t.equal(session.alpnProtocol, 'h2')
  const login = await h2(session, 'POST', '/auth/login', { 'content-type': 'application/json' }, JSON.stringify({ code: 'u-bob-h2' }))
  t.equal(login.status, 200)
  t.equal(login.json.code, 200)
  t.ok(login.headers['x-request-id'], 'the request id is returned')
  const { accessToken, refreshToken, openid } = login.json.data as { accessToken: string, refreshToken: string, openid: string }

  // A body of unannounced length (no content-length: HTTP/2 frames it) reaches the upstream whole.
  const call = await h2(session, 'POST', '/api/orders?x=1', { authorization: `Bearer ${accessToken}`, 'x-openid': 'oMallory', 'x-wx-openid': 'oMallory2', 'content-type': 'text/plain' }, 'hello over h2')
  t.equal(call.status, 200)
  const echo = call.json as { method: string, url: string, headers: Record<string, string> }
  t.equal(echo.method, 'POST')
  t.equal(echo.url, '/api/orders?x=1')
  t.equal(echo.headers['x-openid'], openid)
  t.notMatch(JSON.stringify(echo.headers), /Mallory/)
  t.notOk(Object.keys(echo.headers).some((h) => h.startsWith(':')), 'no pseudo-header is forwarded')
  t.equal(echo.headers.host, new URL(echoUrl).host, 'Host is the upstream\'s')
  t.equal(echo.headers['x-forwarded-host'], `127.0.0.1:${port}`, 'X-Forwarded-Host from :authority')
  t.equal(echo.headers['x-forwarded-proto'], 'https')
  t.equal(echo.headers['x-request-id'], call.headers['x-request-id'])

  const refreshed = await h2(session, 'POST', '/auth/refresh', { 'content-type': 'application/json' }, JSON.stringify({ refreshToken }))
  t.equal(refreshed.status, 200)
  t.not(refreshed.json.data.refreshToken, refreshToken, 'rotated')
  const out = await h2(session, 'POST', '/auth/logout', { 'content-type': 'application/json', authorization: `Bearer ${refreshed.json.data.accessToken as string}` }, '{}')
  t.equal(out.status, 200)
  const after = await h2(session, 'GET', '/api/me', { authorization: `Bearer ${refreshed.json.data.accessToken as string}` })
  t.equal(after.status, 401, 'revoked at once')
  t.equal(after.json.code, 20006)
})

t.test('HTTP/2: envelopes for refusals (401, 404, 413), and the access line and metrics count them', async (t) => {
  const session = await h2session(t)
  const missing = await h2(session, 'GET', '/api/me')
  t.equal(missing.status, 401)
  t.match(missing.json, { code: 20001, data: null })
  t.match(missing.headers['content-type'], /application\/json/)
  const bad = await h2(session, 'GET', '/api/me', { authorization: 'Bearer not-a-token' })
  t.equal(bad.status, 401)
  t.equal(bad.json.code, 20002)
  const none = await h2(session, 'GET', '/nowhere')
  t.equal(none.status, 404)
  t.equal(none.json.code, 30004)
  const big = await h2(session, 'POST', '/auth/login', { 'content-type': 'application/json' }, JSON.stringify({ code: 'x'.repeat(70_000) }))
  t.equal(big.status, 413)
  await waitUntil(() => logs.lines.some((l) => l.msg === 'access' && l.path === '/nowhere' && l.status === 404))
  t.ok(await metric(adminUrl, 'wegate_requests_total', { route: 'none', status_class: '4xx' }) >= 1)
})

t.test('HTTP/2: the rate limit answers 429 with Retry-After', async (t) => {
  const session = await h2session(t)
  const codes: number[] = []
  let last: H2Answer | undefined
  for (let i = 0; i < 3; i++) {
    last = await h2(session, 'GET', '/limited/x')
    codes.push(last.status)
  }
  t.same(codes, [200, 200, 429])
  t.equal(last?.json.code, 30001)
  t.ok(Number(last?.headers['retry-after']) > 0)
})

t.test('HTTP/2 refusals before routing: a bad Expect and oversized headers get the envelope on their stream only', async (t) => {
  const session = await h2session(t)
  const expect = await h2(session, 'GET', '/api/me', { expect: 'something' })
  t.equal(expect.status, 417)
  t.equal(expect.json.code, 30034)
  const connect = await h2(session, 'CONNECT', '', { ':authority': 'example.com:443' })
  t.equal(connect.status, 405, 'CONNECT: not a forward proxy')
  t.equal(connect.json.code, 30005)
  const big = await h2(session, 'GET', '/api/me', { 'x-big': 'a'.repeat(20_000) })
  t.equal(big.status, 431, 'limits.headerSize holds on h2 too')
  t.equal(big.json.code, 30031)
  t.ok(await metric(adminUrl, 'wegate_http_parser_errors_total', { reason: 'h2_header_overflow' }) >= 1)
  const ok = await h2(session, 'GET', '/nowhere')
  t.equal(ok.status, 404, 'the session still serves')
})

t.test('HTTP/2: connection-specific headers of an HTTP/1.1 upstream never reach the h2 response; the rest does', async (t) => {
  const session = await h2session(t)
  const res = await h2(session, 'GET', '/chatty/x')
  t.equal(res.status, 200)
  t.equal(res.text, 'part one, part two', 'the chunked body, whole')
  for (const name of ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'x-dropped']) t.notOk(res.headers[name], `no ${name}`)
  t.equal(res.headers['x-kept'], 'yes')
  t.same(res.headers['set-cookie'], ['a=1', 'b=2'])
  t.ok(res.headers['x-request-id'])
  await waitUntil(() => logs.lines.some((l) => l.msg === 'access' && l.route === 'chatty' && l.upstream === 'v1' && l.status === 200))
  t.ok(await metric(adminUrl, 'wegate_requests_total', { route: 'chatty', upstream: 'v1', status_class: '2xx' }) >= 1, 'counted per route and upstream')
})

t.test('HTTP/2: a route\'s body limit holds with and without content-length', async (t) => {
  const session = await h2session(t)
  const small = await h2(session, 'POST', '/small/x', {}, 'x'.repeat(500))
  t.equal(small.status, 200)
  t.equal(small.json.bodyLength, 500, 'a body of unannounced length reaches the upstream whole')
  const announced = await h2(session, 'POST', '/small/x', { 'content-length': '4000' }, 'x'.repeat(4000))
  t.equal(announced.status, 413)
  t.equal(announced.json.code, 30013)
  const unannounced = await h2(session, 'POST', '/small/x', {}, 'x'.repeat(4000))
  t.equal(unannounced.status, 413)
  t.equal(unannounced.json.code, 30013)
  t.equal((await h2(session, 'GET', '/small/after')).status, 200, 'the session still serves')
})

t.test('HTTP/1.1 over TLS keeps the plain listener\'s refusals and pipelining', async (t) => {
  const raw = async (text: string): Promise<string> => await new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: Number(port), ca: ca.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => socket.write(text))
    let got = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => { got += d })
    socket.on('close', () => resolve(got))
    socket.on('error', reject)
  })
  const noHost = await raw('GET /nowhere HTTP/1.1\r\n\r\n')
  t.match(noHost, /^HTTP\/1\.1 400 /)
  t.match(noHost, /"code":40000/)
  const smuggle = await raw('POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
  t.match(smuggle, /^HTTP\/1\.1 400 /, 'Content-Length with Transfer-Encoding refused')
  const pipelined = await raw('GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.equal(pipelined.match(/HTTP\/1\.1 404 /g)?.length, 2, 'two answers, in order')
})

t.test('HTTP/1.1 over TLS: headers not finished within limits.headersTimeout get the 408 envelope', async (t) => {
  const slow = await startGateway(t, { listen: { host: '127.0.0.1', port: 0, tls }, limits: { headersTimeout: '300ms', requestTimeout: '600ms' } })
  const started = performance.now()
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port: Number(new URL(slow.url).port), ca: ca.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      socket.write('GET /nowhere HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n') // and never the blank line
    })
    let got = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => { got += d })
    socket.on('close', () => resolve(got))
    socket.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 408 /)
  t.match(answer, /"code":30008/)
  t.ok(performance.now() - started < 3000, 'within the configured timeout, not Node\'s defaults')
})

t.test('wss://: WebSocket over TLS (HTTP/1.1) through the gateway', async (t) => {
  const ws = new WebSocket(`${url.replace('https:', 'wss:')}/chat/room`, { ca: ca.ca })
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject) })
  const reply = new Promise<string>((resolve) => ws.once('message', (m: Buffer) => resolve(m.toString())))
  ws.send('hi')
  t.equal(await reply, 'ws:hi')
  t.equal(wsUpstream.handshakes.at(-1)?.headers['x-forwarded-proto'], 'https')
  await closeWs(ws)
  await waitUntil(() => logs.lines.some((l) => l.msg === 'access' && l.websocket === true && l.path === '/chat/room'))
  t.match(logs.lines.find((l) => l.msg === 'access' && l.websocket === true && l.path === '/chat/room'), { proto: 'http/1.1', tls: true }, 'the handshake\'s access line')
})

t.test('the certificate expiry metric: notAfter of the served certificate, by serial', async (t) => {
  t.equal(await metric(adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: served.serial }), Math.floor(served.notAfter / 1000))
})

t.test('draining: an h2 request during shutdown.delay gets GOAWAY, not a Connection header; open streams finish', async (t) => {
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  let arrived = false
  const drained = await startGateway(t, { listen: { host: '127.0.0.1', port: 0, tls }, shutdown: { delay: '200ms', timeout: '5s' } }, {
    before: (gw) => { gw.public.get('/slow-test', async () => { arrived = true; await held; return { code: 200, message: 'ok', data: 'finished' } }) }
  })
  const session = h2connect(drained.url, { ca: ca.ca })
  t.teardown(() => session.destroy())
  const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()))
  const slowSession = h2connect(drained.url, { ca: ca.ca })
  t.teardown(() => slowSession.destroy())
  const slow = h2(slowSession, 'GET', '/slow-test')
  await waitUntil(() => arrived)
  const stopping = drained.gateway.shutdown()
  await waitUntil(() => !drained.gateway.isReady())
  const during = await h2(session, 'GET', '/other')
  t.equal(during.status, 404)
  t.notOk(during.headers.connection, 'no Connection header on h2')
  await goaway
  release()
  const finished = await slow
  t.equal(finished.status, 200, 'the in-flight stream completed')
  t.equal(finished.json.data, 'finished')
  await stopping
})

t.test('shutdown.timeout: an h2 stream still open is cut, and shutdown completes', async (t) => {
  let arrived = false
  const stuck = await startGateway(t, { listen: { host: '127.0.0.1', port: 0, tls }, shutdown: { delay: '0s', timeout: '300ms' } }, {
    before: (gw) => { gw.public.get('/never', async () => { arrived = true; await new Promise(() => {}) }) }
  })
  const session = h2connect(stuck.url, { ca: ca.ca })
  t.teardown(() => session.destroy())
  const never = h2(session, 'GET', '/never').then(() => 'answered', () => 'cut')
  await waitUntil(() => arrived)
  const started = performance.now()
  await stuck.gateway.shutdown()
  t.ok(performance.now() - started < 3000, 'bounded by shutdown.timeout')
  t.equal(await never, 'cut')
  await waitUntil(() => session.destroyed || session.closed)
})
