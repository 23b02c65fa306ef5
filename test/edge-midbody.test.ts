/**
 * Responses that do not finish are still accounted for: an upstream that breaks
 * off in the middle of a body is an upstream error (metrics, canary rollback)
 * and the client sees a truncated response, not a complete one; a client that
 * leaves mid-download gets its access line, marked aborted, and is not blamed
 * on the upstream.
 */
import { connect } from 'node:net'
import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'
import { startServer } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

async function metricValue (adminUrl: string, line: RegExp): Promise<number> {
  const text = await (await request(`${adminUrl}/metrics`)).body.text()
  const m = text.split('\n').find((l) => line.test(l))
  return m === undefined ? 0 : Number(m.slice(m.lastIndexOf(' ') + 1))
}

t.test('an upstream that resets mid-body: counted as an upstream error and rolls the canary back', async (t) => {
  // Headers and half the promised body, then the connection is destroyed.
  const broken = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' })
    res.write('x'.repeat(50), () => setTimeout(() => res.socket?.destroy(), 10))
  })
  const fine = await startServer(t, (_req, res) => res.end('ok'))
  const { url, adminUrl, logs } = await startGateway(t, {
    routes: [{
      name: 'dl',
      prefix: '/',
      auth: 'public',
      upstreams: [{ name: 'stable', url: fine.url, weight: 0 }, { name: 'canary', url: broken.url, weight: 1 }],
      canary: { sticky: 'none', rollback: { upstream: 'canary', errorRate: 0.5, window: '1m', minRequests: 3 } }
    }]
  })

  for (let i = 0; i < 3; i++) {
    const res = await request(`${url}/file`)
    t.equal(res.statusCode, 200, 'the status line had already gone out')
    await t.rejects(res.body.text(), 'the client sees the body cut short, not a complete answer')
  }
  await waitUntil(() => logs.lines.filter((l) => l.msg === 'access').length >= 3)
  const lines = logs.lines.filter((l) => l.msg === 'access')
  t.equal(lines.length, 3, 'one access line per request, finished or not')
  for (const l of lines) t.match(l, { route: 'dl', upstream: 'canary', status: 200, aborted: true })
  t.equal(await metricValue(adminUrl, /^wegate_upstream_errors_total\{.*upstream="canary".*kind="reset"/), 3, 'each reset is counted')
  t.equal(await metricValue(adminUrl, /^wegate_requests_total\{route="dl",upstream="canary"/), 3, 'and each request')
  t.equal(await metricValue(adminUrl, /^wegate_canary_rollbacks_total\{route="dl",upstream="canary"\}/), 1, 'the failing canary was rolled back')

  const after = await request(`${url}/file`)
  t.equal(await after.body.text(), 'ok', 'traffic now goes to stable')
})

t.test('a client that leaves mid-download: an aborted access line, not an upstream error', async (t) => {
  let upstreamClosed = false
  const slow = await startServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    const timer = setInterval(() => res.write(Buffer.alloc(1024)), 5)
    res.on('close', () => { clearInterval(timer); upstreamClosed = true })
  })
  const { url, adminUrl, logs } = await startGateway(t, {
    routes: [{ name: 'dl', prefix: '/', auth: 'public', upstreams: [{ name: 'u', url: slow.url, weight: 1 }] }]
  })
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /stream HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaver-1\r\n\r\n')
  await new Promise((resolve) => socket.once('data', resolve))
  socket.destroy()
  await waitUntil(() => upstreamClosed && logs.lines.some((l) => l.msg === 'access'))
  t.ok(upstreamClosed, 'the upstream request was stopped too')
  t.match(logs.lines.find((l) => l.msg === 'access'), { reqId: 'leaver-1', route: 'dl', upstream: 'u', status: 200, aborted: true })
  t.equal(await metricValue(adminUrl, /^wegate_upstream_errors_total\{.*kind="client_abort"/), 1, 'counted as the client\'s doing')
  t.equal(await metricValue(adminUrl, /^wegate_upstream_errors_total\{.*kind="reset"/), 0, 'not as an upstream failure')
})

t.test('the access line is one JSON object per request with the documented fields', async (t) => {
  const up = await startServer(t, (_req, res) => res.end('ok'))
  const { url, logs } = await startGateway(t, {
    routes: [{ name: 'api', prefix: '/', auth: 'public', upstreams: [{ name: 'v1', url: up.url, weight: 1 }] }]
  })
  const res = await request(`${url}/a%22b/%E4%BD%A0?secret=1`, { headers: { 'x-request-id': 'rid-42' } })
  await res.body.dump()
  await waitUntil(() => logs.lines.some((l) => l.msg === 'access'))
  const line = logs.lines.find((l) => l.msg === 'access')
  t.match(line, { level: 30, service: 'wegate', reqId: 'rid-42', method: 'GET', path: '/a%22b/%E4%BD%A0', route: 'api', upstream: 'v1', status: 200 })
  t.type(line?.ms, 'number')
  t.type(line?.time, 'string')
  t.notOk('aborted' in (line ?? {}), 'a finished response is not marked aborted')
  t.notMatch(logs.text(), /secret=1/, 'the query string is never logged')
})

t.test('a client that leaves before the upstream answers: status 499 in the access line, the upstream request stopped', async (t) => {
  let upstreamClosed = false
  let arrived = false
  const slow = await startServer(t, (req, res) => {
    arrived = true
    res.on('close', () => { upstreamClosed = true })
    setTimeout(() => { if (!res.destroyed) res.end('late') }, 5000).unref()
    req.resume()
  })
  const { url, logs } = await startGateway(t, {
    routes: [{ name: 'slow', prefix: '/', auth: 'public', upstreams: [{ name: 'u', url: slow.url, weight: 1 }] }]
  })
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /wait HTTP/1.1\r\nHost: x\r\nX-Request-Id: impatient-1\r\n\r\n')
  await waitUntil(() => arrived)
  socket.destroy()
  await waitUntil(() => upstreamClosed && logs.lines.some((l) => l.msg === 'access'))
  t.ok(upstreamClosed, 'the upstream request was aborted, not left waiting')
  t.match(logs.lines.find((l) => l.msg === 'access'), { reqId: 'impatient-1', route: 'slow', status: 499, aborted: true })
})

t.test('regression: a malformed URL is accounted for too (access line, X-Request-Id)', async (t) => {
  const { url, logs } = await startGateway(t, {})
  const res = await request(`${url}/%zz`, { headers: { 'x-request-id': 'bad-url-1' } })
  t.equal(res.statusCode, 400)
  t.equal(res.headers['x-request-id'], 'bad-url-1')
  await res.body.dump()
  await waitUntil(() => logs.lines.some((l) => l.msg === 'access'))
  t.match(logs.lines.find((l) => l.msg === 'access'), { reqId: 'bad-url-1', status: 400, code: 40003 })
})
