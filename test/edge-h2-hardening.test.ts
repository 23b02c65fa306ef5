/**
 * HTTP/2 on the public listener under slow or hostile clients: the limits an
 * HTTP/1.1 connection has (limits.requestTimeout) hold per HTTP/2 stream, so a
 * client trickling request bodies cannot hold upstream connections.
 * Real sockets, a CA made for the test, short limits (no sleeps: polling).
 */
import { connect as h2connect, constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2'
import t from 'tap'
import { Agent, request } from 'undici'
import { metric } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { createTestCa } from './helpers/tls.js'
import { startServer } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

const ca = await createTestCa(t)
const served = await ca.issue('server')
const tls = { certFile: served.certFile, keyFile: served.keyFile }

// Reads the whole body before answering; records requests that ended early.
let upstreamAborted = 0
const bodiesRead: string[] = []
const reader = await startServer(t, (req, res) => {
  let body = ''
  req.setEncoding('utf8')
  req.on('data', (d: string) => { body += d })
  req.on('end', () => { bodiesRead.push(body); res.end('read') })
  res.on('close', () => { if (!res.writableFinished) upstreamAborted++ })
})
// Answers (headers and a first chunk) at once, without waiting for the request body.
const eager = await startServer(t, (req, res) => {
  req.resume()
  res.writeHead(200, { 'content-type': 'text/plain' })
  res.write('first')
})

// Reads the body, then answers when the test says so.
const lateHeld: Array<() => void> = []
const late = await startServer(t, (req, res) => {
  req.resume()
  req.on('end', () => lateHeld.push(() => res.end('late')))
})

const gw = await startGateway(t, {
  listen: { host: '127.0.0.1', port: 0, tls },
  limits: { headersTimeout: '300ms', requestTimeout: '300ms' },
  routes: [
    { name: 'reader', prefix: '/reader', auth: 'public', timeout: '10s', upstreams: [{ name: 'v1', url: reader.url, weight: 1 }] },
    { name: 'late', prefix: '/late', auth: 'public', timeout: '10s', upstreams: [{ name: 'v1', url: late.url, weight: 1 }] },
    { name: 'eager', prefix: '/eager', auth: 'public', timeout: '10s', upstreams: [{ name: 'v1', url: eager.url, weight: 1 }] }
  ]
})

async function session (t: { teardown: (fn: () => unknown) => void }): Promise<ClientHttp2Session> {
  const s = h2connect(gw.url, { ca: ca.ca })
  t.teardown(() => s.destroy())
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('error', reject) })
  return s
}

interface Outcome { status?: number, text: string, rstCode?: number, headers: IncomingHttpHeaders }

/** A POST that sends one byte and then nothing; resolves when the stream closes. */
function trickle (s: ClientHttp2Session, path: string, headers: Record<string, string> = {}): { stream: ClientHttp2Stream, done: Promise<Outcome> } {
  const stream = s.request({ ':method': 'POST', ':path': path, 'content-type': 'text/plain', ...headers }, { endStream: false })
  stream.write('x')
  const done = new Promise<Outcome>((resolve) => {
    const out: Outcome = { text: '', headers: {} }
    stream.on('response', (h) => { out.headers = h; out.status = Number(h[':status']) })
    stream.setEncoding('utf8')
    stream.on('data', (d: string) => { out.text += d })
    stream.on('error', () => {})
    stream.on('close', () => { out.rstCode = stream.rstCode; resolve(out) })
  })
  return { stream, done }
}

t.test('an h2 request body not complete within limits.requestTimeout gets the 408 envelope, counted; the upstream request is cut', async (t) => {
  const s = await session(t)
  const before = await metric(gw.adminUrl, 'wegate_http_parser_errors_total', { reason: 'err_http_request_timeout' })
  const abortedBefore = upstreamAborted
  const started = performance.now()
  const { done } = trickle(s, '/reader/upload')
  const out = await Promise.race([done, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 3000).unref())])
  t.ok(out !== undefined, 'the stream ended within 3 s (requestTimeout 300 ms), not the route timeout (10 s)')
  t.equal(out?.status, 408)
  t.equal(JSON.parse(out?.text ?? '{}').code, 30008)
  t.ok(performance.now() - started >= 250, 'not before the timeout')
  t.equal(out?.rstCode, h2c.NGHTTP2_NO_ERROR, 'then RST_STREAM NO_ERROR: stop sending')
  await waitUntil(async () => await metric(gw.adminUrl, 'wegate_http_parser_errors_total', { reason: 'err_http_request_timeout' }) === before + 1)
  await waitUntil(() => upstreamAborted > abortedBefore)
  t.pass('the upstream request was aborted (its connection is free)')
  const ok = s.request({ ':method': 'POST', ':path': '/reader/fine' })
  ok.end('whole')
  const status = await new Promise((resolve) => ok.once('response', (h) => resolve(Number(h[':status']))))
  ok.resume()
  t.equal(status, 200, 'the session still serves; a complete body is not cut')
})

t.test('the same with a Content-Length the body never reaches', async (t) => {
  const s = await session(t)
  const abortedBefore = upstreamAborted
  const out = await trickle(s, '/reader/sized', { 'content-length': '100' }).done
  t.equal(out.status, 408)
  await waitUntil(() => upstreamAborted > abortedBefore)
  t.notOk(gw.logs.lines.some((l) => Number(l.level) >= 50), 'nothing logged as an error')
})

t.test('an h2 client going away mid-body: the upstream request is aborted, never completed with a truncated body', async (t) => {
  const s = h2connect(gw.url, { ca: ca.ca })
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('error', reject) })
  const abortedBefore = upstreamAborted
  const { stream } = trickle(s, '/reader/partial')
  stream.write('partial-body')
  await waitUntil(() => stream.bufferSize === 0)
  s.destroy()
  await waitUntil(() => upstreamAborted > abortedBefore || bodiesRead.some((b) => b.startsWith('xpartial')))
  t.notOk(bodiesRead.some((b) => b.startsWith('xpartial')), 'the upstream never saw the truncated body as a whole request')
  t.ok(upstreamAborted > abortedBefore, 'the upstream request was aborted')
})

t.test('many trickling h2 streams on one connection are all cut at requestTimeout', async (t) => {
  const s = await session(t)
  const outs = await Promise.all(Array.from({ length: 50 }, () => trickle(s, '/reader/u').done))
  t.same([...new Set(outs.map((o) => o.status))], [408])
})

t.test('a response already started when the request times out: the stream is reset with CANCEL', async (t) => {
  const s = await session(t)
  const { done } = trickle(s, '/eager/x')
  const out = await Promise.race([done, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 3000).unref())])
  t.ok(out !== undefined, 'closed within 3 s')
  t.equal(out?.status, 200, 'the upstream\'s headers had gone out')
  t.equal(out?.rstCode, h2c.NGHTTP2_CANCEL)
})

t.test('a complete request whose upstream answers after limits.requestTimeout is not cut: the deadline covers receiving the request only', async (t) => {
  const s = await session(t)
  const stream = s.request({ ':method': 'POST', ':path': '/late/ok' }, { endStream: false })
  stream.end('whole')
  const started = performance.now()
  await waitUntil(() => lateHeld.length === 1)
  await waitUntil(() => performance.now() - started > 600)
  lateHeld[0]?.()
  const status = await new Promise((resolve) => stream.once('response', (h) => resolve(Number(h[':status']))))
  stream.resume()
  t.equal(status, 200)
})

t.test('an idle h2 session: GOAWAY after limits.keepAliveTimeout, and closed limits.requestTimeout later if a stream is still open', async (t) => {
  let arrived = 0
  const idle = await startGateway(t, {
    listen: { host: '127.0.0.1', port: 0, tls },
    limits: { headersTimeout: '300ms', requestTimeout: '300ms', keepAliveTimeout: '300ms' }
  }, {
    before: (g) => { g.public.get('/silent', async () => { arrived++; await new Promise(() => {}) }) }
  })
  const s = h2connect(idle.url, { ca: ca.ca })
  t.teardown(() => s.destroy())
  await new Promise<void>((resolve, reject) => { s.once('connect', () => resolve()); s.once('error', reject) })
  let goaway = 0
  s.on('goaway', () => { goaway = performance.now() })
  s.on('error', () => {})
  const started = performance.now()
  const streams = Array.from({ length: 5 }, () => {
    const st = s.request({ ':method': 'GET', ':path': '/silent' })
    st.on('error', () => {})
    return new Promise<void>((resolve) => st.once('close', () => resolve()))
  })
  await waitUntil(() => arrived === 5)
  await Promise.race([Promise.all(streams), new Promise((resolve) => setTimeout(resolve, 4000).unref())])
  await waitUntil(() => s.destroyed || s.closed, 1000)
  t.ok(goaway > 0, 'GOAWAY first')
  t.ok(performance.now() - started < 4000, `the connection is closed (${Math.round(performance.now() - started)} ms), not held`)
})

t.test('h2: :authority and Host naming different hosts is malformed (400 envelope, counted); the same host is fine', async (t) => {
  const s = await session(t)
  const before = await metric(gw.adminUrl, 'wegate_http_parser_errors_total', { reason: 'h2_authority_mismatch' })
  const ask = async (headers: Record<string, string>): Promise<{ status: number, text: string }> => await new Promise((resolve, reject) => {
    const st = s.request({ ':method': 'GET', ':path': '/nowhere', ...headers })
    let status = 0
    let text = ''
    st.setEncoding('utf8')
    st.on('response', (h) => { status = Number(h[':status']) })
    st.on('data', (d: string) => { text += d })
    st.on('end', () => resolve({ status, text }))
    st.on('error', reject)
  })
  const port = new URL(gw.url).port
  const mismatch = await ask({ ':authority': `127.0.0.1:${port}`, host: 'evil.example' })
  t.equal(mismatch.status, 400)
  t.equal(JSON.parse(mismatch.text).code, 40000)
  t.equal(await metric(gw.adminUrl, 'wegate_http_parser_errors_total', { reason: 'h2_authority_mismatch' }), before + 1)
  t.equal((await ask({ ':authority': `127.0.0.1:${port}`, host: `127.0.0.1:${port}` })).status, 404, 'the same host in both: served')
  t.equal((await ask({ ':authority': `LOCALHOST:${port}`, host: `localhost:${port}` })).status, 404, 'host names compare case-insensitively')
  t.equal((await ask({})).status, 404, ':authority alone: served')
})

t.test('the access line names the protocol: proto h2 or http/1.1, and tls', async (t) => {
  const s = await session(t)
  const st = s.request({ ':method': 'GET', ':path': '/nowhere/h2-line' })
  st.resume()
  await new Promise<void>((resolve) => st.once('end', () => resolve()))
  const agent = new Agent({ connect: { ca: ca.ca } })
  t.teardown(async () => await agent.close())
  const res = await request(`${gw.url}/nowhere/h1-line`, { dispatcher: agent })
  await res.body.dump()
  await waitUntil(() => gw.logs.lines.some((l) => l.msg === 'access' && l.path === '/nowhere/h1-line'))
  t.match(gw.logs.lines.find((l) => l.msg === 'access' && l.path === '/nowhere/h2-line'), { proto: 'h2', tls: true, status: 404 })
  t.match(gw.logs.lines.find((l) => l.msg === 'access' && l.path === '/nowhere/h1-line'), { proto: 'http/1.1', tls: true, status: 404 })
})
