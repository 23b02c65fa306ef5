/**
 * End to end client limits, each an envelope: header block too large → 431,
 * body over the route's bodyLimit → 413 (declared or chunked), headers or whole
 * request too slow → 408. Nothing over a limit reaches the upstream whole.
 */
import t from 'tap'
import { request } from 'undici'
import { ErrorCatalog } from '../src/errors.js'
import { startGateway } from './helpers/gateway.js'
import { envelope, rawRequest, startEcho } from './helpers/upstream.js'

const echo = await startEcho(t, 'echo')
const { url } = await startGateway(t, {
  limits: { headerSize: '4kb', headersTimeout: '500ms', requestTimeout: '1s' },
  routes: [{ name: 'small', prefix: '/small', auth: 'public', bodyLimit: '1kb', upstreams: [{ name: 'echo', url: echo.url, weight: 1 }] }]
})
const host = new URL(url).host

t.test('a header block over limits.headerSize → 431 envelope', async (t) => {
  const res = await rawRequest(url, `GET /small/x HTTP/1.1\r\nHost: ${host}\r\nX-Big: ${'a'.repeat(8192)}\r\nConnection: close\r\n\r\n`)
  t.equal(res.status, 431)
  t.same(JSON.parse(res.body), { code: ErrorCatalog.HEADERS_TOO_LARGE.code, message: ErrorCatalog.HEADERS_TOO_LARGE.message, data: null })
})

t.test('a header block under the limit passes', async (t) => {
  const res = await request(`${url}/small/x`, { headers: { 'x-big': 'a'.repeat(2048) } })
  t.equal(res.statusCode, 200)
  await res.body.dump()
})

t.test('a body over the route bodyLimit with Content-Length → 413, not forwarded', async (t) => {
  const before = echo.seen.length
  const res = await request(`${url}/small/x`, { method: 'POST', body: 'x'.repeat(1025) })
  t.equal(res.statusCode, 413)
  t.equal((await res.body.json() as { code: number }).code, ErrorCatalog.BODY_TOO_LARGE.code)
  t.equal(echo.seen.length, before)
})

t.test('a chunked body that grows past the route bodyLimit → 413', async (t) => {
  const before = echo.seen.length
  const chunk = (s: string) => `${s.length.toString(16)}\r\n${s}\r\n`
  const res = await rawRequest(url, [
    `POST /small/x HTTP/1.1\r\nHost: ${host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n`,
    chunk('y'.repeat(600)), 20, chunk('y'.repeat(600)), 20, '0\r\n\r\n'
  ])
  t.equal(res.status, 413)
  t.equal(envelope(res.body).code, ErrorCatalog.BODY_TOO_LARGE.code)
  t.ok(echo.seen.slice(before).every((e) => e.bodyLength <= 1024), 'the upstream never got the whole oversized body')
})

t.test('a body exactly at the bodyLimit passes', async (t) => {
  const res = await request(`${url}/small/x`, { method: 'POST', body: 'z'.repeat(1024) })
  t.equal(res.statusCode, 200)
  t.equal((await res.body.json() as { bodyLength: number }).bodyLength, 1024)
})

t.test('headers not finished within limits.headersTimeout → 408 envelope', async (t) => {
  const res = await rawRequest(url, [`GET /small/x HTTP/1.1\r\nHost: ${host}\r\n`, 'X-Slow: 1\r\n'], { timeoutMs: 5000 })
  t.equal(res.status, 408)
  t.equal(envelope(res.body).code, ErrorCatalog.REQUEST_TIMEOUT.code)
})

t.test('a request body not finished within limits.requestTimeout → 408 envelope', async (t) => {
  const res = await rawRequest(url, [`POST /small/x HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 100\r\nConnection: close\r\n\r\n`, 'only part'], { timeoutMs: 5000 })
  t.equal(res.status, 408)
  t.equal(envelope(res.body).code, ErrorCatalog.REQUEST_TIMEOUT.code)
})
