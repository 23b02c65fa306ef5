/**
 * Open tunnels are bounded and do not outlive their token (issue 11.3):
 * a tunnel opened with a token closes (4401, the envelope as reason) when the
 * token is revoked by logout, logout-all, refresh-token reuse or a store that
 * lost its state — on another instance too — or reaches its exp; an idle tunnel closes after the route's
 * websocket.idleTimeout (1001); handshakes past the limits get 429 / 503
 * envelopes; wegate_websocket_tunnels_open counts them by route.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { ErrorCatalog } from '../src/errors.js'
import { authConfig, bearer, login, metric, post, redisFor, startWeChat } from './helpers/auth.js'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { closed, closeWs, openWs, roundTrip, startWsUpstream, waitUntil } from './helpers/websocket.js'

const wechat = await startWeChat(t)
const up = await startWsUpstream(t, 'chat')
const routes = [
  { name: 'chat', prefix: '/ws/chat', auth: 'required', upstreams: [{ name: 'v1', url: up.url, weight: 1 }] },
  { name: 'live', prefix: '/ws/live', auth: 'public', upstreams: [{ name: 'v1', url: up.url, weight: 1 }] },
  { name: 'quiet', prefix: '/ws/quiet', auth: 'optional', websocket: { idleTimeout: '250ms' }, upstreams: [{ name: 'v1', url: up.url, weight: 1 }] }
]
const stack = (patch: Record<string, unknown> = {}) => authConfig({ wechatUrl: wechat.url, echoUrl: up.url, patch: { routes, ...patch } })
const gw = await startGateway(t, stack())

/** Open a tunnel on `gw` with an access token; fails the test unless it opens. */
async function tunnel (on: StartedGateway, path: string, accessToken?: string) {
  const o = await openWs(on.url, path, accessToken === undefined ? {} : bearer(accessToken))
  if (o.status !== 101) throw new Error(`expected 101, got ${o.status} ${o.body}`)
  return o.ws
}

const tokenClose = (name: 'TOKEN_REVOKED' | 'TOKEN_EXPIRED') =>
  ({ code: 4401, reason: JSON.stringify({ code: ErrorCatalog[name].code, message: ErrorCatalog[name].message }) })

t.test('logout closes the tunnel its token opened, with 4401 and the reason, within a second', async (t) => {
  const pair = await login(gw.url, 'u-wslogout-1')
  const ws = await tunnel(gw, '/ws/chat/room', pair.accessToken)
  t.equal(await roundTrip(ws, 'hi'), 'chat:hi')
  const upstreamCloses = up.closes.length
  const done = closed(ws)
  const started = performance.now()
  const out = await post(gw.url + '/auth/logout', {}, bearer(pair.accessToken))
  t.equal(out.status, 200)
  const got = await done
  const delay = performance.now() - started
  t.comment(`tunnel closed ${delay.toFixed(0)} ms after the logout request`)
  t.same(got, tokenClose('TOKEN_REVOKED'), 'the client gets 4401 and the envelope of the refusal')
  t.ok(delay < 1000, `closed within 1 s (${delay.toFixed(0)} ms)`)
  await waitUntil(() => up.closes.length > upstreamCloses)
  t.same(up.closes.at(-1), tokenClose('TOKEN_REVOKED'), 'the upstream gets a close frame with the same code')
  t.ok(gw.logs.lines.some((l) => l.msg === 'websocket closed by the gateway' && l.reason === 'revoked' && l.closeCode === 4401))
  t.equal(await metric(gw.adminUrl, 'wegate_websocket_closed_total', { route: 'chat', reason: 'revoked' }), 1)
})

t.test('logout-all closes every tunnel of the user; another user\'s stays open', async (t) => {
  const phone = await login(gw.url, 'u-wsall-1')
  const tablet = await login(gw.url, 'u-wsall-2')
  const other = await login(gw.url, 'u-wsother-1')
  const a = await tunnel(gw, '/ws/chat/a', phone.accessToken)
  const b = await tunnel(gw, '/ws/chat/b', tablet.accessToken)
  const c = await tunnel(gw, '/ws/chat/c', other.accessToken)
  const closes = Promise.all([closed(a), closed(b)])
  t.equal((await post(gw.url + '/auth/logout', { all: true }, bearer(phone.accessToken))).status, 200)
  t.same(await closes, [tokenClose('TOKEN_REVOKED'), tokenClose('TOKEN_REVOKED')])
  t.equal(await roundTrip(c, 'still'), 'chat:still', 'the other user is untouched')
  await closeWs(c)
})

t.test('refresh-token reuse revokes the family: its tunnels close', async (t) => {
  const own = await startGateway(t, stack({ tokens: { refreshGrace: '0s' } }))
  const first = await login(own.url, 'u-wsreuse-1')
  const rotated = await post(own.url + '/auth/refresh', { refreshToken: first.refreshToken })
  t.equal(rotated.status, 200)
  const ws = await tunnel(own, '/ws/chat/r', rotated.json?.data.accessToken as string)
  const done = closed(ws)
  const reused = await post(own.url + '/auth/refresh', { refreshToken: first.refreshToken })
  t.equal(reused.json?.code, ErrorCatalog.REFRESH_REUSED.code)
  t.same(await done, tokenClose('TOKEN_REVOKED'))
})

t.test('a tunnel closes when its token reaches exp (the gateway\'s clock)', async (t) => {
  let clock = Date.now()
  const own = await startGateway(t, stack(), { now: () => clock })
  const signed = own.gateway.snapshot().tokens.signAccess({ openid: 'oExp', appid: 'wx00000000000demo0', fid: 'f-exp' })
  const ws = await tunnel(own, '/ws/chat/e', signed.token)
  clock = signed.expiresAtMs - 1
  t.equal(await roundTrip(ws, 'before'), 'chat:before', 'open until exp')
  const done = closed(ws)
  clock = signed.expiresAtMs
  t.same(await done, tokenClose('TOKEN_EXPIRED'))
  t.equal(await metric(own.adminUrl, 'wegate_websocket_closed_total', { route: 'chat', reason: 'expired' }), 1)
})

t.test('an idle tunnel closes after the route\'s websocket.idleTimeout; traffic keeps it open', async (t) => {
  const ws = await tunnel(gw, '/ws/quiet/x')
  const opened = performance.now()
  // Traffic every 100 ms for 500 ms: twice the 250 ms idle timeout, still open.
  for (let i = 0; i < 5; i++) {
    await sleep(100)
    t.equal(await roundTrip(ws, `m${i}`), `chat:m${i}`)
  }
  t.ok(performance.now() - opened > 500)
  const upstreamCloses = up.closes.length
  const quietFrom = performance.now()
  t.same(await closed(ws), { code: 1001, reason: 'idle timeout' })
  // (the gateway saw the last byte a little before the client did)
  t.ok(performance.now() - quietFrom >= 200, 'not before the idle timeout')
  await waitUntil(() => up.closes.length > upstreamCloses)
  t.same(up.closes.at(-1), { code: 1001, reason: 'idle timeout' }, 'the upstream is told too')
  t.equal(await metric(gw.adminUrl, 'wegate_websocket_closed_total', { route: 'quiet', reason: 'idle' }), 1)
})

t.test('limits: per caller → 429, gateway-wide → 503, envelopes at handshake; slots come back on close', async (t) => {
  const own = await startGateway(t, stack({ websocket: { maxTunnels: 4, maxTunnelsPerCaller: 2 } }))
  const sign = (openid: string) => own.gateway.snapshot().tokens.signAccess({ openid, appid: 'wx00000000000demo0', fid: `f-${openid}` }).token
  const alice = sign('oAlice')
  const a1 = await tunnel(own, '/ws/chat/1', alice)
  const a2 = await tunnel(own, '/ws/live/2', alice) // a public route: the token is not read, the IP is the caller
  const a3 = await tunnel(own, '/ws/chat/3', alice)
  t.teardown(() => { for (const w of [a1, a2, a3]) w.terminate() })
  const over = await openWs(own.url, '/ws/chat/4', { ...bearer(alice), 'x-request-id': 'ws-limit-1' })
  t.equal(over.status, 429)
  t.same(JSON.parse(over.body), { code: ErrorCatalog.TUNNELS_PER_CALLER.code, message: ErrorCatalog.TUNNELS_PER_CALLER.message, data: null })
  t.equal(over.headers['x-request-id'], 'ws-limit-1')
  const b1 = await tunnel(own, '/ws/chat/b', sign('oBob')) // another caller: the fourth and last
  t.teardown(() => b1.terminate())
  const full = await openWs(own.url, '/ws/chat/5', bearer(sign('oCarol')))
  t.equal(full.status, 503)
  const fullBody = JSON.parse(full.body) as { data: { traceId: string } }
  t.same(fullBody, { code: ErrorCatalog.TUNNELS_FULL.code, message: ErrorCatalog.TUNNELS_FULL.message, data: { traceId: fullBody.data.traceId } })
  t.match(fullBody.data.traceId, /^[0-9a-f]{32}$/, 'a 5xx carries its trace id')
  t.equal(await metric(own.adminUrl, 'wegate_websocket_tunnels_open', { route: 'chat' }), 3)
  t.equal(await metric(own.adminUrl, 'wegate_websocket_tunnels_open', { route: 'live' }), 1)
  t.ok(own.logs.lines.some((l) => l.msg === 'access' && l.websocket === true && l.status === 429 && l.code === ErrorCatalog.TUNNELS_PER_CALLER.code))
  await closeWs(a1)
  await waitUntil(async () => await metric(own.adminUrl, 'wegate_websocket_tunnels_open', { route: 'chat' }) === 2)
  const again = await tunnel(own, '/ws/chat/6', alice)
  t.equal(await roundTrip(again, 'back'), 'chat:back', 'a closed tunnel gives its slot back')
  again.terminate()
  t.equal(up.handshakes.filter((h) => h.url === '/ws/chat/4' || h.url === '/ws/chat/5').length, 0, 'refused handshakes never reach the upstream')
})

t.test('anonymous callers are counted per client IP', async (t) => {
  const own = await startGateway(t, stack({ websocket: { maxTunnelsPerCaller: 1 } }))
  const first = await tunnel(own, '/ws/live/1')
  t.teardown(() => first.terminate())
  t.equal((await openWs(own.url, '/ws/live/2')).status, 429)
})

t.test('with Redis: logout on one instance closes the tunnel open on another', async (t) => {
  const redis = await redisFor(t)
  const a = await startGateway(t, authConfig({ wechatUrl: wechat.url, echoUrl: up.url, redisUrl: redis.url, patch: { routes } }))
  const b = await startGateway(t, authConfig({ wechatUrl: wechat.url, echoUrl: up.url, redisUrl: redis.url, patch: { routes } }))
  await Promise.all([a.gateway.store.ready(5000), b.gateway.store.ready(5000)])
  const pair = await login(a.url, 'u-wsmulti-1')
  const ws = await tunnel(b, '/ws/chat/m', pair.accessToken)
  const done = closed(ws)
  const started = performance.now()
  t.equal((await post(a.url + '/auth/logout', {}, bearer(pair.accessToken))).status, 200)
  t.same(await done, tokenClose('TOKEN_REVOKED'))
  const delay = performance.now() - started
  t.comment(`tunnel on the other instance closed ${delay.toFixed(0)} ms after the logout request`)
  t.ok(delay < 1000, `closed within 1 s (${delay.toFixed(0)} ms)`)
})

t.test('Redis restarted empty (state lost): tunnels opened with tokens issued before the loss close once it is detected', async (t) => {
  const redis = await redisFor(t)
  // The deployment's store state began a minute ago (its marker, as a first gateway wrote it).
  await redis.client().set('wegate:{rv}:epoch', `seeded:${Date.now() - 60_000}`, 'PX', 60_000)
  let offset = -5000 // tokens signed 5 s ago: before the loss this test provokes, after the state began
  const gwR = await startGateway(t, authConfig({ wechatUrl: wechat.url, echoUrl: up.url, redisUrl: redis.url, patch: { routes } }), { now: () => Date.now() + offset })
  await gwR.gateway.store.ready(5000)
  const signed = gwR.gateway.snapshot().tokens.signAccess({ openid: 'oLost', appid: 'wx00000000000demo0', fid: 'f-lost' })
  offset = 0
  const ws = await tunnel(gwR, '/ws/chat/lost', signed.token)
  t.equal(await roundTrip(ws, 'before'), 'chat:before')
  const done = closed(ws, 15_000)
  const started = performance.now()
  await redis.restart() // no persistence: the revocations are gone
  t.same(await done, tokenClose('TOKEN_REVOKED'))
  t.comment(`tunnel closed ${(performance.now() - started).toFixed(0)} ms after the Redis restart began`)
})
