/**
 * End to end: `Expect: 100-continue` (curl sends it for any body over 1 KiB,
 * and many HTTP clients for large uploads) is answered by the gateway itself;
 * the upload is forwarded like any other.
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { startGateway } from './helpers/gateway.js'
import { rawRequest, startEcho, type Echo } from './helpers/upstream.js'

const echo = await startEcho(t, 'echo')
const { url } = await startGateway(t, {
  routes: [{ name: 'up', prefix: '/', auth: 'public', upstreams: [{ name: 'echo', url: echo.url, weight: 1 }] }]
})

t.test('regression: a body sent with Expect: 100-continue got 502 (undici refuses the expect header)', async (t) => {
  const body = 'q'.repeat(4096)
  const res = await rawRequest(url, [
    `POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`,
    50,
    body
  ])
  t.match(res.raw, /^HTTP\/1\.1 100 Continue\r\n\r\n/, 'the gateway says continue')
  const final = res.raw.slice(res.raw.indexOf('\r\n\r\n') + 4)
  t.match(final, /^HTTP\/1\.1 200 /, 'then the upstream answer')
  const e = JSON.parse(final.slice(final.indexOf('\r\n\r\n') + 4)) as Echo
  t.equal(e.bodyLength, body.length)
  t.equal(e.bodySha256, createHash('sha256').update(body).digest('hex'))
  t.equal(e.headers.expect, undefined, 'the expectation was met by the gateway, not passed on')
})
