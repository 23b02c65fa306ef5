/**
 * End to end: a client that goes away in the middle of its upload must not leave
 * the upstream request (and its pooled connection) waiting for a body that will
 * never come.
 */
import { connect } from 'node:net'
import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'
import { startServer } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

const events: string[] = []
const upstream = await startServer(t, (req, res) => {
  const tag = String(req.headers['x-tag'])
  events.push(`${tag}:start`)
  req.on('data', () => {})
  req.on('end', () => { events.push(`${tag}:complete`); res.end('ok') })
  req.on('close', () => { if (!req.complete) events.push(`${tag}:aborted`) })
})
const { url } = await startGateway(t, {
  routes: [{ name: 'up', prefix: '/', auth: 'public', upstreams: [{ name: 'u', url: upstream.url, weight: 1 }] }]
})
const { hostname, port } = new URL(url)

async function abandonUpload (tag: string, framing: string, firstPiece: string): Promise<void> {
  const socket = connect(Number(port), hostname)
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write(`POST /upload HTTP/1.1\r\nHost: x\r\nX-Tag: ${tag}\r\n${framing}\r\n\r\n${firstPiece}`)
  await waitUntil(() => events.includes(`${tag}:start`))
  socket.destroy()
}

t.test('regression: a chunked upload abandoned by the client is aborted upstream too', async (t) => {
  await abandonUpload('chunked', 'Transfer-Encoding: chunked', '5\r\nhello\r\n')
  await waitUntil(() => events.includes('chunked:aborted'))
  t.ok(events.includes('chunked:aborted'), 'the upstream request was aborted')
  t.notOk(events.includes('chunked:complete'))
})

t.test('an upload with Content-Length abandoned by the client is aborted upstream too', async (t) => {
  await abandonUpload('length', 'Content-Length: 1000', 'hello')
  await waitUntil(() => events.includes('length:aborted'))
  t.ok(events.includes('length:aborted'), 'the upstream request was aborted')
})

t.test('the gateway keeps serving afterwards', async (t) => {
  const res = await request(`${url}/after`, { method: 'POST', body: 'x', headers: { 'x-tag': 'after' } })
  t.equal(res.statusCode, 200)
  t.equal(await res.body.text(), 'ok')
})

t.test('a client that stops reading a streamed download releases the upstream response', async (t) => {
  let upstreamClosed = false
  const endless = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    const timer = setInterval(() => res.write(Buffer.alloc(16 * 1024)), 5)
    res.on('close', () => { clearInterval(timer); upstreamClosed = true })
  })
  const gw = await startGateway(t, { routes: [{ name: 'dl', prefix: '/', auth: 'public', upstreams: [{ name: 'e', url: endless.url, weight: 1 }] }] })
  const gwUrl = new URL(gw.url)
  const socket = connect(Number(gwUrl.port), gwUrl.hostname)
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /stream HTTP/1.1\r\nHost: x\r\n\r\n')
  await new Promise((resolve) => socket.once('data', resolve))
  socket.destroy()
  await waitUntil(() => upstreamClosed)
  t.ok(upstreamClosed, 'the upstream response was closed')
})
