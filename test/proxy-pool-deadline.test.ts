/**
 * A route's timeout bounds the time to the upstream's response headers including
 * the wait for a pooled connection: with every connection to an origin busy, a
 * queued request gets the 504 envelope within the route timeout instead of
 * waiting for a connection indefinitely. A one-connection pool saturates it.
 */
import { Readable } from 'node:stream'
import t from 'tap'
import { request } from 'undici'
import { metric } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { startServer } from './helpers/upstream.js'

// /stream: headers at once, then a chunk every 100 ms until the test releases it; else answers at once.
const streams = new Set<() => void>()
let quick = 0
const up = await startServer(t, (req, res) => {
  if (req.url?.includes('/upload') === true) {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(`got ${n}`))
    return
  }
  req.resume()
  if (req.url?.includes('/stream') === true) {
    res.writeHead(200, { 'content-type': 'text/plain' })
    const tick = setInterval(() => res.write('.'), 100)
    const release = (): void => { clearInterval(tick); res.end('done') }
    streams.add(release)
    res.on('close', () => { clearInterval(tick); streams.delete(release) })
    return
  }
  quick++
  res.end('quick')
})
t.teardown(() => { for (const release of streams) release() })

const gw = await startGateway(t, {
  routes: [{ name: 'p', prefix: '/p', auth: 'public', timeout: '500ms', bodyLimit: '1mb', upstreams: [{ name: 'v1', url: up.url, weight: 1 }] }]
}, { upstreamConnections: 1 })

t.test('with the pool\'s only connection busy, a queued request gets 504 within the route timeout', async (t) => {
  const busy = await request(`${gw.url}/p/stream`)
  t.equal(busy.statusCode, 200, 'the one connection is streaming a long response')
  const before = await metric(gw.adminUrl, 'wegate_upstream_errors_total', { route: 'p', upstream: 'v1', kind: 'timeout' })
  const started = performance.now()
  const queued = request(`${gw.url}/p/quick`).then(async (r) => ({ status: r.statusCode, body: await r.body.text() }))
  const out = await Promise.race([queued, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 3000).unref())])
  const ms = performance.now() - started
  t.ok(out !== undefined, `answered (${Math.round(ms)} ms) while the connection is still busy`)
  t.equal(out?.status, 504)
  t.equal(JSON.parse(out?.body ?? '{}').code, 50021)
  t.ok(ms >= 450 && ms < 2000, `within the route timeout (${Math.round(ms)} ms)`)
  t.equal(await metric(gw.adminUrl, 'wegate_upstream_errors_total', { route: 'p', upstream: 'v1', kind: 'timeout' }), before + 1, 'counted as an upstream timeout')
  for (const release of streams) release()
  t.match(await busy.body.text(), /done$/, 'the busy response was not disturbed')
  const after = await request(`${gw.url}/p/quick`)
  t.equal(await after.body.text(), 'quick', 'the connection serves the next request')
  t.equal(quick, 1, 'the timed-out request was never sent upstream')
  const line = gw.logs.lines.find((l) => l.msg === 'access' && l.path === '/p/quick' && l.status === 504)
  t.match(line, { proto: 'http/1.1', code: 50021 }, 'the access line')
  t.notOk(line?.tls, 'plain HTTP: no tls')
})

t.test('regression: an upload slower than the route timeout is not an upstream timeout (the deadline covers the queue only)', async (t) => {
  const before = await metric(gw.adminUrl, 'wegate_upstream_errors_total', { route: 'p', upstream: 'v1', kind: 'timeout' })
  // 10 chunks of 1 kB, one every 120 ms: the upload takes ~1.2 s, over twice the 500 ms timeout.
  const body = (async function * () {
    for (let i = 0; i < 10; i++) {
      yield Buffer.alloc(1000, 'x')
      await new Promise((resolve) => setTimeout(resolve, 120))
    }
  })()
  const r = await request(`${gw.url}/p/upload`, { method: 'POST', body: Readable.from(body), headers: { 'content-type': 'application/octet-stream' } })
  t.equal(r.statusCode, 200)
  t.equal(await r.body.text(), 'got 10000', 'the whole body reached the upstream')
  t.equal(await metric(gw.adminUrl, 'wegate_upstream_errors_total', { route: 'p', upstream: 'v1', kind: 'timeout' }), before, 'no upstream timeout counted (no canary error)')
})
