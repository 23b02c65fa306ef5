/**
 * W3C trace context over real sockets: a trace is created when absent,
 * continued from a trusted proxy (trustProxy), replaced for an untrusted client
 * (whose id is kept as linkedTraceId on the access line), forwarded upstream on
 * HTTP and WebSocket, written on the access line, and put in 5xx envelopes.
 */
import t from 'tap'
import { request } from 'undici'
import { ErrorCatalog } from '../src/errors.js'
import { parseTraceparent } from '../src/http/trace-context.js'
import { startGateway, type StartedGateway, type TestContext } from './helpers/gateway.js'
import { closedPort, startServer } from './helpers/upstream.js'
import { closeWs, openWs, startWsUpstream } from './helpers/websocket.js'

const CLIENT_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736'
const CLIENT_PARENT = '00f067aa0ba902b7'
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/

interface Seen { traceparent?: string | string[] | undefined, tracestate?: string | string[] | undefined }

async function stack (t: TestContext, trustProxy: boolean | string[]): Promise<{ gw: StartedGateway, seen: Seen[], ws: Awaited<ReturnType<typeof startWsUpstream>> }> {
  const seen: Seen[] = []
  const upstream = await startServer(t, (req, res) => {
    seen.push({ traceparent: req.headers.traceparent, tracestate: req.headers.tracestate })
    res.end('ok')
  })
  const ws = await startWsUpstream(t, 'ws')
  const down = await closedPort()
  const gw = await startGateway(t, {
    trustProxy,
    routes: [
      { name: 'api', prefix: '/api', auth: 'public', upstreams: [{ name: 's', url: upstream.url, weight: 1 }] },
      { name: 'ws', prefix: '/ws', auth: 'public', upstreams: [{ name: 's', url: ws.url, weight: 1 }] },
      { name: 'down', prefix: '/down', auth: 'public', upstreams: [{ name: 's', url: `http://127.0.0.1:${down}`, weight: 1 }] }
    ]
  })
  return { gw, seen, ws }
}

/** GET through the gateway; the upstream's view of the trace headers and the access line. */
async function get (gw: StartedGateway, seen: Seen[], path: string, headers: Record<string, string | string[]> = {}) {
  const before = seen.length
  const res = await request(`${gw.url}${path}`, { headers })
  const body = await res.body.text()
  const reqId = res.headers['x-request-id'] as string
  const line = gw.logs.lines.find((l) => l.msg === 'access' && l.reqId === reqId)
  return { status: res.statusCode, body, upstream: seen[before], line }
}

t.test('no traceparent: a new sampled trace goes upstream and onto the access line', async (t) => {
  const { gw, seen } = await stack(t, ['127.0.0.1'])
  const a = await get(gw, seen, '/api/x')
  const m = TRACEPARENT.exec(String(a.upstream?.traceparent))
  t.ok(m, `upstream traceparent ${String(a.upstream?.traceparent)}`)
  t.equal(m?.[3], '01', 'sampled: the backends\' tracers record it')
  t.equal(a.upstream?.tracestate, undefined)
  t.equal(a.line?.traceId, m?.[1], 'the access line carries the trace id')
  t.equal(a.line?.linkedTraceId, undefined)
  const b = await get(gw, seen, '/api/x')
  t.not(parseTraceparent(b.upstream?.traceparent)?.traceId, m?.[1], 'each request its own trace')
})

t.test('from a trusted proxy: the trace continues with the gateway as the parent span', async (t) => {
  const { gw, seen } = await stack(t, ['127.0.0.1'])
  for (const flags of ['01', '00']) {
    const a = await get(gw, seen, '/api/x', { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-${flags}`, tracestate: 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE' })
    const m = TRACEPARENT.exec(String(a.upstream?.traceparent))
    t.equal(m?.[1], CLIENT_TRACE, 'same trace id')
    t.not(m?.[2], CLIENT_PARENT, 'the parent is the gateway\'s span')
    t.equal(m?.[3], flags, 'the sampling decision is kept')
    t.equal(a.upstream?.tracestate, 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE', 'tracestate passed on')
    t.equal(a.line?.traceId, CLIENT_TRACE)
  }
  // A later version with extra fields is read by its known prefix (the spec's forward compatibility).
  const future = await get(gw, seen, '/api/x', { traceparent: `cc-${CLIENT_TRACE}-${CLIENT_PARENT}-01-what-the-future-holds` })
  t.equal(parseTraceparent(future.upstream?.traceparent)?.traceId, CLIENT_TRACE)
  t.match(String(future.upstream?.traceparent), /^00-/, 'sent as version 00')
})

t.test('invalid traceparents start a new trace and drop tracestate', async (t) => {
  const { gw, seen } = await stack(t, ['127.0.0.1'])
  const invalid = [
    `00-${CLIENT_TRACE.toUpperCase()}-${CLIENT_PARENT}-01`, // upper case
    `00-${'0'.repeat(32)}-${CLIENT_PARENT}-01`, // all-zero trace id
    `00-${CLIENT_TRACE}-${'0'.repeat(16)}-01`, // all-zero parent
    `ff-${CLIENT_TRACE}-${CLIENT_PARENT}-01`, // version ff
    `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01-extra`, // version 00 has nothing after the flags
    `00-${CLIENT_TRACE.slice(1)}-${CLIENT_PARENT}-01`, // short
    `00_${CLIENT_TRACE}-${CLIENT_PARENT}-01`, // separator
    `00-${CLIENT_TRACE}-${CLIENT_PARENT}-0g` // flags not hex
  ]
  for (const traceparent of invalid) {
    const a = await get(gw, seen, '/api/x', { traceparent, tracestate: 'rojo=1' })
    const id = parseTraceparent(a.upstream?.traceparent)?.traceId
    t.ok(id !== undefined && id !== CLIENT_TRACE, `${traceparent}: new trace`)
    t.equal(a.upstream?.tracestate, undefined, `${traceparent}: tracestate dropped`)
    t.equal(a.line?.linkedTraceId, undefined)
  }
  // Two traceparent headers are one invalid value.
  const two = await get(gw, seen, '/api/x', { traceparent: [`00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`, `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`] })
  t.not(parseTraceparent(two.upstream?.traceparent)?.traceId, CLIENT_TRACE)
})

t.test('from an untrusted client: a new trace; the client\'s id kept only as a link on the access line', async (t) => {
  const { gw, seen } = await stack(t, false)
  const a = await get(gw, seen, '/api/x', { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-00`, tracestate: 'rojo=1' })
  const m = TRACEPARENT.exec(String(a.upstream?.traceparent))
  t.ok(m)
  t.not(m?.[1], CLIENT_TRACE, 'the client cannot choose the backends\' trace')
  t.equal(m?.[3], '01', 'nor turn sampling off')
  t.equal(a.upstream?.tracestate, undefined, 'the client\'s tracestate is dropped')
  t.equal(a.line?.traceId, m?.[1])
  t.equal(a.line?.linkedTraceId, CLIENT_TRACE, 'linked on the access line')
})

t.test('5xx envelopes carry the trace id of the access line; 4xx do not', async (t) => {
  const { gw, seen } = await stack(t, ['127.0.0.1'])
  const down = await get(gw, seen, '/down/x', { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01` })
  t.equal(down.status, 502)
  t.same(JSON.parse(down.body), { code: ErrorCatalog.UPSTREAM_UNAVAILABLE.code, message: ErrorCatalog.UPSTREAM_UNAVAILABLE.message, data: { traceId: CLIENT_TRACE } })
  t.equal(down.line?.traceId, CLIENT_TRACE)
  const fresh = await get(gw, seen, '/down/x')
  t.equal((JSON.parse(fresh.body) as { data: { traceId: string } }).data.traceId, fresh.line?.traceId)
  const missing = await get(gw, seen, '/nowhere')
  t.equal(missing.status, 404)
  t.equal((JSON.parse(missing.body) as { data: unknown }).data, null)
})

t.test('WebSocket: the handshake carries the trace upstream; a refused one\'s 5xx envelope has it', async (t) => {
  const { gw, ws } = await stack(t, ['127.0.0.1'])
  const open = await openWs(gw.url, '/ws/x', { traceparent: `00-${CLIENT_TRACE}-${CLIENT_PARENT}-01`, tracestate: 'rojo=1' })
  t.equal(open.status, 101)
  const hs = ws.handshakes[ws.handshakes.length - 1]
  const m = TRACEPARENT.exec(String(hs.headers.traceparent))
  t.equal(m?.[1], CLIENT_TRACE)
  t.not(m?.[2], CLIENT_PARENT)
  t.equal(hs.headers.tracestate, 'rojo=1')
  await closeWs(open.ws)
  const line = gw.logs.lines.find((l) => l.msg === 'access' && l.websocket === true && l.route === 'ws')
  t.equal(line?.traceId, CLIENT_TRACE)

  const down = await openWs(gw.url, '/down/x')
  t.equal(down.status, 502)
  const body = JSON.parse(down.body) as { data: { traceId: string } }
  const downLine = gw.logs.lines.find((l) => l.msg === 'access' && l.route === 'down' && l.websocket === true)
  t.match(body.data.traceId, /^[0-9a-f]{32}$/)
  t.equal(body.data.traceId, downLine?.traceId)
})
