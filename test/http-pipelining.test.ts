/**
 * Issue 11.6: a request pipelined behind a response that closes the connection
 * must not reach an upstream (or run an /auth handler): its answer could never
 * be delivered. Before, it was executed and its answer dropped. Pipelined
 * requests behind a keep-alive response are still answered, in order.
 */
import { connect } from 'node:net'
import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { startServer } from './helpers/upstream.js'

/** Write `bytes` in one go on a fresh connection; everything received until the gateway closes it. */
async function pipeline (url: string, bytes: string): Promise<string> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  let received = ''
  socket.setEncoding('utf8').on('data', (d: string) => { received += d })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  socket.write(bytes)
  await new Promise<void>((resolve) => { socket.once('close', () => resolve()) })
  return received
}

/** One request as bytes: `GET path HTTP/1.1` with a Host and the given extra header lines. */
const GET = (path: string, version = '1.1', ...headers: string[]) => `GET ${path} HTTP/${version}\r\nHost: x\r\n${headers.map((h) => h + '\r\n').join('')}\r\n`
const LOGIN = (body: string) => `POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`

const seen: string[] = []
const api = await startServer(t, (req, res) => {
  seen.push(req.url ?? '')
  // No length: to an HTTP/1.0 client this answer ends only by closing the connection.
  if (req.url === '/api/no-length') res.write('no-length-')
  res.end(`answer for ${req.url ?? ''}`)
})
// WeChat's code2Session, recording the codes asked about (each is refused: an invalid code).
const codes: string[] = []
const wechat = await startServer(t, (req, res) => {
  codes.push(new URL(req.url ?? '/', 'http://x').searchParams.get('js_code') ?? '')
  res.setHeader('content-type', 'application/json')
  res.end('{"errcode":40029,"errmsg":"invalid code"}')
})
const { url } = await startGateway(t, {
  wechat: { baseUrl: wechat.url, retries: 0 },
  routes: [{ name: 'api', prefix: '/api', auth: 'public', upstreams: [{ name: 'v1', url: api.url, weight: 1 }] }]
})

t.beforeEach(() => { seen.length = 0 })

t.test('regression: behind an HTTP/1.0 answer with no length (closes the connection)', async (t) => {
  const received = await pipeline(url, GET('/api/no-length', '1.0', 'Connection: keep-alive') + GET('/api/after-close', '1.0', 'Connection: keep-alive'))
  t.match(received, /^HTTP\/1\.1 200 [^]*\r\nConnection: close\r\n[^]*no-length-answer for \/api\/no-length$/, 'the first answer, then the connection closed')
  // A request on a connection of its own: once the upstream has seen it, it would have seen the pipelined one.
  t.equal((await fetch(`${url}/api/probe`)).status, 200, 'a request of its own is forwarded')
  t.same(seen, ['/api/no-length', '/api/probe'], 'the pipelined request never reached the upstream')
})

t.test('regression: behind a 400 for bad JSON on /auth/login', async (t) => {
  const received = await pipeline(url, LOGIN('{') + GET('/api/after-bad-json') + LOGIN('{"code":"u-pipe"}'))
  t.match(received, /^HTTP\/1\.1 400 [^]*connection: close[^]*"code":40000/i, 'the 400 closes the connection')
  t.equal(received.match(/HTTP\/1\.1 /g)?.length, 1, 'one answer only')
  t.same(seen, [], 'the pipelined request never reached the upstream')
  // A login on a connection of its own: once WeChat has seen it, it would have seen the pipelined one.
  const probe = await fetch(`${url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"u-probe"}' })
  t.equal(probe.status, 401, 'a login of its own runs')
  t.same(codes, ['u-probe'], 'the pipelined login never ran')
})

t.test('pipelined requests behind keep-alive answers are all answered, in order', async (t) => {
  const received = await pipeline(url, GET('/api/one') + GET('/api/two') + GET('/api/three', '1.1', 'Connection: close'))
  t.same([...received.matchAll(/answer for (\/api\/[a-z]+)/g)].map((m) => m[1]), ['/api/one', '/api/two', '/api/three'], 'three answers, in order')
  t.same(seen, ['/api/one', '/api/two', '/api/three'], 'each forwarded once, in order')
})
