/**
 * End to end forwarding fidelity and failure mapping: bodies (large, chunked,
 * binary, non-ASCII) and queries arrive intact both ways; upstream 4xx/5xx pass
 * through untouched; refused/reset → 502 envelope; no answer in time → 504.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import t from 'tap'
import { request } from 'undici'
import { ErrorCatalog } from '../src/errors.js'
import { startGateway } from './helpers/gateway.js'
import { closedPort, envelope, rawRequest, startEcho, startServer, type Echo } from './helpers/upstream.js'

const echo = await startEcho(t, 'echo')
const MB = 1024 * 1024
const big = randomBytes(6 * MB)
const bigSha = createHash('sha256').update(big).digest('hex')

const statusUp = await startServer(t, (req, res) => {
  const status = Number((req.url ?? '').split('/').pop())
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'retry-after': '7', 'x-from': 'service', 'set-cookie': ['a=1', 'b=2'] })
  res.end(`service says ${status} 你好`)
})
const download = await startServer(t, (_req, res) => {
  // Streamed in 64 KiB pieces, no Content-Length: chunked all the way.
  res.writeHead(200, { 'content-type': 'application/octet-stream' })
  let off = 0
  const push = () => {
    while (off < big.length) {
      const ok = res.write(big.subarray(off, off + 65536))
      off += 65536
      if (!ok) { res.once('drain', push); return }
    }
    res.end()
  }
  push()
})
const slow = await startServer(t, (_req, res) => {
  const timer = setTimeout(() => res.end('late'), 5000)
  res.on('close', () => clearTimeout(timer))
})
const reset = await startServer(t, (req) => { req.socket.destroy() })
const midReset = await startServer(t, (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' })
  res.write('partial')
  setTimeout(() => req.socket.destroy(), 20)
})
const refusedPort = await closedPort()
// Answers every request with bytes that are not HTTP.
const garbage = createNetServer((s) => { s.on('error', () => {}); s.on('data', () => { s.end('garbage\r\n\r\n') }) })
await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve))
t.teardown(() => { garbage.close() })
const garbagePort = (garbage.address() as AddressInfo).port

const up = (name: string, url: string, extra: Record<string, unknown> = {}) =>
  ({ name, prefix: `/${name}`, auth: 'public', upstreams: [{ name, url, weight: 1 }], ...extra })
const { url, logs } = await startGateway(t, {
  routes: [
    up('echo', echo.url, { bodyLimit: '10mb' }),
    up('status', statusUp.url),
    up('download', download.url),
    up('slow', slow.url, { timeout: '300ms' }),
    up('reset', reset.url),
    up('midreset', midReset.url),
    up('refused', `http://127.0.0.1:${refusedPort}`),
    up('garbage', `http://127.0.0.1:${garbagePort}`)
  ]
})

t.test('a non-ASCII JSON body and query arrive byte for byte', async (t) => {
  const body = JSON.stringify({ name: '张三', note: 'emoji 🎉, ümlaut, \u0000 nul', n: 1 })
  const res = await request(`${url}/echo/items?q=%E4%B8%AD%E6%96%87&tag=a&tag=b&empty=&plus=a+b`, {
    method: 'POST', headers: { 'content-type': 'application/json; charset=utf-8' }, body
  })
  const e = await res.body.json() as Echo
  t.equal(e.method, 'POST')
  t.equal(e.url, '/echo/items?q=%E4%B8%AD%E6%96%87&tag=a&tag=b&empty=&plus=a+b')
  t.equal(e.body, body)
  t.equal(e.headers['content-type'], 'application/json; charset=utf-8')
  t.equal(e.headers['content-length'], String(Buffer.byteLength(body)))
})

t.test('methods are forwarded as sent', async (t) => {
  for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const) {
    const e = await (await request(`${url}/echo/x`, { method, body: method === 'DELETE' || method === 'OPTIONS' ? undefined : 'b' })).body.json() as Echo
    t.equal(e.method, method)
  }
  const head = await request(`${url}/echo/x`, { method: 'HEAD' })
  t.equal(head.statusCode, 200)
  t.equal(await head.body.text(), '')
})

t.test('a 6 MB upload with Content-Length is streamed intact', async (t) => {
  const e = await (await request(`${url}/echo/upload`, { method: 'POST', body: big })).body.json() as Echo
  t.equal(e.bodyLength, big.length)
  t.equal(e.bodySha256, bigSha)
})

t.test('a 6 MB chunked upload is streamed intact', async (t) => {
  const e = await (await request(`${url}/echo/upload`, { method: 'POST', body: Readable.from(chunks(big, 100_000)) })).body.json() as Echo
  t.equal(e.headers['transfer-encoding'], 'chunked')
  t.equal(e.bodyLength, big.length)
  t.equal(e.bodySha256, bigSha)
})

t.test('a 6 MB streamed download arrives intact', async (t) => {
  const res = await request(`${url}/download/file`)
  const hash = createHash('sha256')
  let length = 0
  for await (const c of res.body) { hash.update(c as Buffer); length += (c as Buffer).length }
  t.equal(length, big.length)
  t.equal(hash.digest('hex'), bigSha)
})

t.test('upstream 4xx/5xx pass through untouched: status, headers, body', async (t) => {
  for (const status of [400, 404, 409, 500, 503]) {
    const res = await request(`${url}/status/${status}`)
    t.equal(res.statusCode, status)
    t.equal(await res.body.text(), `service says ${status} 你好`)
    t.equal(res.headers['x-from'], 'service')
    t.equal(res.headers['retry-after'], '7')
    t.same(res.headers['set-cookie'], ['a=1', 'b=2'])
  }
})

t.test('bodiless answers (204, 304) pass through and leave the connection usable', async (t) => {
  for (const status of [204, 304, 204, 304]) {
    const res = await request(`${url}/status/${status}`)
    t.equal(res.statusCode, status)
    t.equal(await res.body.text(), '')
    t.equal(res.headers['x-from'], 'service')
  }
  const after = await request(`${url}/status/200`)
  t.equal(after.statusCode, 200)
  await after.body.dump()
})

async function gatewayError (path: string) {
  const res = await request(`${url}${path}`)
  const text = await res.body.text()
  return { status: res.statusCode, text, body: JSON.parse(text) as unknown }
}

t.test('connection refused → 502 envelope without transport details', async (t) => {
  const r = await gatewayError('/refused/x')
  t.equal(r.status, 502)
  t.same(Object.keys(r.body as object), ['code', 'message', 'data'])
  t.match(r.body, { code: ErrorCatalog.UPSTREAM_UNAVAILABLE.code, message: ErrorCatalog.UPSTREAM_UNAVAILABLE.message, data: { traceId: /^[0-9a-f]{32}$/ } }, 'a 5xx carries its trace id')
  t.same(Object.keys((r.body as { data: object }).data), ['traceId'])
  t.notMatch(r.text, /ECONN|undici|127\.0\.0\.1/)
})

t.test('connection reset before an answer → 502 envelope', async (t) => {
  const r = await gatewayError('/reset/x')
  t.equal(r.status, 502)
  t.equal((r.body as { code: number }).code, ErrorCatalog.UPSTREAM_UNAVAILABLE.code)
})

t.test('an upstream answering with something that is not HTTP → 502 envelope', async (t) => {
  const r = await gatewayError('/garbage/x')
  t.equal(r.status, 502)
  t.equal((r.body as { code: number }).code, ErrorCatalog.UPSTREAM_UNAVAILABLE.code)
  t.notMatch(r.text, /parse|HPE_|Expected/i)
})

t.test('a request with both Content-Length and Transfer-Encoding is refused (no smuggling), not forwarded', async (t) => {
  const before = echo.seen.length
  const res = await rawRequest(url, 'POST /echo/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
  t.equal(res.status, 400)
  t.equal(envelope(res.body).code, ErrorCatalog.BAD_REQUEST.code)
  t.equal(echo.seen.length, before)
})

t.test('no answer within the route timeout → 504 envelope', async (t) => {
  const r = await gatewayError('/slow/x')
  t.equal(r.status, 504)
  t.same(Object.keys(r.body as object), ['code', 'message', 'data'])
  t.match(r.body, { code: ErrorCatalog.UPSTREAM_TIMEOUT.code, message: ErrorCatalog.UPSTREAM_TIMEOUT.message, data: { traceId: /^[0-9a-f]{32}$/ } })
  t.same(Object.keys((r.body as { data: object }).data), ['traceId'])
})

t.test('a reset after the response started cuts the client response (no fake success)', async (t) => {
  const res = await request(`${url}/midreset/x`)
  t.equal(res.statusCode, 200)
  await t.rejects(res.body.text(), 'the client sees a broken body, not a complete one')
})

t.test('failures are logged for the operator with route and upstream', async (t) => {
  const lines = logs.lines.filter((l) => l.msg === 'access' && (l.route === 'refused' || l.route === 'slow'))
  t.ok(lines.some((l) => l.route === 'refused' && l.upstream === 'refused' && l.status === 502))
  t.ok(lines.some((l) => l.route === 'slow' && l.upstream === 'slow' && l.status === 504))
  t.ok(logs.lines.some((l) => typeof l.msg === 'string' && l.msg.includes('refused') && l.level === 50), 'error line names the failure kind')
})

function * chunks (buf: Buffer, size: number): Generator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size)
}
