/**
 * Two gateway instances sharing one Redis: whatever one instance mints, the
 * other honours; whatever one revokes, the other refuses within a second.
 */
import t from 'tap'
import { bearer, get, login, post, redisFor, startAuthGateway, startEcho, startWeChat, testClock } from './helpers/auth.js'
import { pollAnswer as until } from './helpers/wait.js'

const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
// 300 ms refresh grace, so that a reuse can be provoked without waiting the default 10 s.
const patch = { tokens: { keys: [{ kid: 'k1', secret: 'multi-instance-secret-0123456789abcdef' }], refreshGrace: '300ms' } }
// one clock for both instances, moved by the test (the grace window is compared with it in Redis)
const clock = testClock()
const a = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch, now: clock.now })
const b = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch, now: clock.now })

t.test('a token minted by instance A is accepted by instance B', async (t) => {
  const d = await login(a.url, 'u-m1-1')
  const res = await fetch(b.url + '/api/me', { headers: bearer(d.accessToken) })
  t.equal(res.status, 200)
  const seen = await res.json() as { headers: Record<string, string> }
  t.equal(seen.headers['x-openid'], d.openid)
  const r = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(r.status, 200, 'B rotates A\'s refresh token')
  t.equal((await get(a.url + '/api/me', bearer(r.json?.data.accessToken))).status, 200, 'and A accepts what B minted')
})

t.test('logout on A: B rejects the access token within 1 s', async (t) => {
  const d = await login(a.url, 'u-m2-1')
  t.equal((await get(b.url + '/api/me', bearer(d.accessToken))).status, 200, 'B accepts it before the logout')
  const out = await post(a.url + '/auth/logout', {}, bearer(d.accessToken))
  t.equal(out.status, 200)
  const { last, ms } = await until(() => get(b.url + '/api/me', bearer(d.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`B rejected the logged-out token ${ms.toFixed(1)} ms after A answered the logout`)
  t.equal(last.status, 401)
  t.equal(last.json?.code, 20006)
  t.equal((await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })).json?.code, 20010, 'the family is dead on B too')
})

t.test('logout-all on B ends sessions minted by A', async (t) => {
  const one = await login(a.url, 'u-m3-1')
  const two = await login(a.url, 'u-m3-2')
  const mine = await login(b.url, 'u-m3-3')
  t.equal((await post(b.url + '/auth/logout', { all: true }, bearer(mine.accessToken))).status, 200)
  for (const s of [one, two]) {
    const { last, ms } = await until(() => get(a.url + '/api/me', bearer(s.accessToken)), (x) => x.status === 401, 1000)
    t.comment(`A rejected after ${ms.toFixed(1)} ms`)
    t.equal(last.json?.code, 20006)
    t.equal((await post(a.url + '/auth/refresh', { refreshToken: s.refreshToken })).status, 401)
  }
})

t.test('a retry on B within the grace window gets A\'s child; a reuse on B after it revokes the family on A', async (t) => {
  const d = await login(a.url, 'u-m4-1')
  const child = (await post(a.url + '/auth/refresh', { refreshToken: d.refreshToken })).json?.data
  const retry = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(retry.status, 200)
  t.equal(retry.json?.data.refreshToken, child.refreshToken, 'B hands back the child A minted (grace)')
  clock.advance(400)
  const reused = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(reused.json?.code, 20011, 'reuse detected on B')
  const { last, ms } = await until(() => get(a.url + '/api/me', bearer(child.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`A denied the family ${ms.toFixed(1)} ms after B detected the reuse`)
  t.equal(last.json?.code, 20006, 'A denies every access token of the family')
  t.equal((await post(a.url + '/auth/refresh', { refreshToken: child.refreshToken })).json?.code, 20010, 'the latest child is dead on A')
})

t.test('concurrent refreshes of one token spread over both instances: one rotation, one child for all', async (t) => {
  const d = await login(a.url, 'u-m5-1')
  const all = await Promise.all(Array.from({ length: 10 }, (_, i) =>
    post((i % 2 === 0 ? a : b).url + '/auth/refresh', { refreshToken: d.refreshToken })))
  t.same(all.map((x) => x.status), Array(10).fill(200))
  t.equal(new Set(all.map((x) => x.json?.data.refreshToken)).size, 1, 'every caller holds the same child')
  const child = all[0]?.json?.data.refreshToken as string
  t.equal((await post(b.url + '/auth/refresh', { refreshToken: child })).status, 200, 'and it rotates')
})
