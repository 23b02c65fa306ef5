/**
 * A route's `rateLimit` applies to WebSocket upgrades exactly as to its HTTP
 * requests: the same rule, the same counters (per openid or IP, shared through
 * Redis), a 429 envelope with Retry-After and RateLimit-* on the raw socket,
 * counted in wegate_rate_limited_total. Regression: upgrades skipped the limiter.
 */
import t from 'tap'
import { request } from 'undici'
import type WebSocket from 'ws'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis.js'
import { openWs, startWsUpstream, type Opened } from './helpers/websocket.js'

/** Open a socket; resolves with it (101) or with the refusal: status, headers, body. */
async function open (gw: StartedGateway, path: string, headers: Record<string, string> = {}): Promise<Opened> {
  return await openWs(gw.url, path, headers)
}

const bearer = (gw: StartedGateway, openid: string) =>
  ({ authorization: `Bearer ${gw.gateway.snapshot().tokens.signAccess({ openid, appid: 'wx00000000000demo0', fid: `f-${openid}` }).token}` })

async function limited (gw: StartedGateway, route: string): Promise<number> {
  const text = await (await request(gw.adminUrl + '/metrics')).body.text()
  return Number(new RegExp(`^wegate_rate_limited_total\\{route="${route}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
}

const upstream = await startWsUpstream(t, 'echo')
const routes = [
  { name: 'chat', prefix: '/ws/chat', auth: 'required', rateLimit: { max: 2, window: '1m', by: 'openid' }, upstreams: [{ name: 'v1', url: upstream.url, weight: 1 }] },
  { name: 'live', prefix: '/ws/live', auth: 'public', rateLimit: { max: 1, window: '1m', by: 'ip' }, upstreams: [{ name: 'v1', url: upstream.url, weight: 1 }] },
  { name: 'mixed', prefix: '/mixed', auth: 'required', rateLimit: { max: 2, window: '1m', by: 'openid' }, upstreams: [{ name: 'v1', url: upstream.url, weight: 1 }] }
]

t.test('per openid: the third upgrade in the window is a 429 envelope with Retry-After and RateLimit-*', async (t) => {
  const gw = await startGateway(t, { routes })
  const before = upstream.handshakes.length
  const sockets: WebSocket[] = []
  t.teardown(() => { for (const s of sockets) s.terminate() })
  for (let i = 0; i < 2; i++) {
    const o = await open(gw, '/ws/chat/room', bearer(gw, 'oAlice'))
    t.equal(o.status, 101, `upgrade ${i + 1} is within the limit`)
    sockets.push(o.ws)
  }
  const refused = await open(gw, '/ws/chat/room', { ...bearer(gw, 'oAlice'), 'x-request-id': 'ws-rl-1' })
  t.equal(refused.status, 429, 'regression: upgrades used to skip the limiter')
  t.same(JSON.parse(refused.body), { code: 30001, message: 'Too many requests', data: { retryAfter: Number(refused.headers['retry-after']) } })
  const retryAfter = Number(refused.headers['retry-after'])
  t.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After: ${retryAfter}`)
  t.equal(refused.headers['ratelimit-limit'], '2')
  t.equal(refused.headers['ratelimit-remaining'], '0')
  t.ok(Number(refused.headers['ratelimit-reset']) > 0)
  t.match(refused.headers['content-type'], /^application\/json/)
  t.equal(refused.headers['x-request-id'], 'ws-rl-1')
  t.equal(upstream.handshakes.length - before, 2, 'the refused upgrade never reached the upstream')
  t.equal(await limited(gw, 'chat'), 1, 'counted in wegate_rate_limited_total')
  t.ok(gw.logs.lines.some((l) => l.msg === 'access' && l.websocket === true && l.status === 429 && l.route === 'chat'), 'an access line with 429')

  const bob = await open(gw, '/ws/chat/room', bearer(gw, 'oBob'))
  t.equal(bob.status, 101, 'another user has his own counter')
  sockets.push(bob.ws)
})

t.test('per IP on a public route', async (t) => {
  const gw = await startGateway(t, { routes })
  const first = await open(gw, '/ws/live')
  t.equal(first.status, 101)
  t.teardown(() => first.ws.terminate())
  const second = await open(gw, '/ws/live')
  t.equal(second.status, 429)
  t.equal(second.headers['ratelimit-limit'], '1')
})

t.test('HTTP requests and upgrades of a route share one counter', async (t) => {
  const gw = await startGateway(t, { routes })
  const auth = bearer(gw, 'oCarol')
  const http = await request(`${gw.url}/mixed/x`, { headers: auth })
  await http.body.dump()
  t.equal(http.statusCode, 200)
  t.equal(http.headers['ratelimit-remaining'], '1', 'the HTTP request counted 1 of 2')
  const ws = await open(gw, '/mixed/socket', auth)
  t.equal(ws.status, 101, 'the upgrade is the second')
  t.teardown(() => ws.ws.terminate())
  const again = await request(`${gw.url}/mixed/x`, { headers: auth })
  t.equal(again.statusCode, 429, 'so the next HTTP request is over the limit')
  t.match(await again.body.json(), { code: 30001 })
  t.equal((await open(gw, '/mixed/socket', auth)).status, 429, 'and so is the next upgrade')
  t.equal(await limited(gw, 'mixed'), 2)
})

t.test('with Redis, the counter is shared by every instance', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const patch = { store: { type: 'redis', url: redis.url }, routes }
  const a = await startGateway(t, patch)
  const b = await startGateway(t, patch)
  await Promise.all([a.gateway.store.ready(), b.gateway.store.ready()])
  const sockets: WebSocket[] = []
  t.teardown(() => { for (const s of sockets) s.terminate() })
  for (const gw of [a, b]) {
    const o = await open(gw, '/ws/chat/room', bearer(a, 'oDave'))
    t.equal(o.status, 101)
    sockets.push(o.ws)
  }
  const third = await open(a, '/ws/chat/room', bearer(a, 'oDave'))
  t.equal(third.status, 429, 'the third upgrade, across both instances, is refused')
})

t.test('Redis down: upgrades are not rate-limited (the documented fail-open policy)', async (t) => {
  const redis = await startRedis()
  const gw = await startGateway(t, { store: { type: 'redis', url: redis.url, failMode: 'open' }, routes })
  await gw.gateway.store.ready()
  await redis.stop()
  for (let i = 0; i < 3; i++) {
    const o = await open(gw, '/ws/live')
    t.equal(o.status, 101, `upgrade ${i + 1} passes with Redis down`)
    o.ws.terminate()
  }
})
