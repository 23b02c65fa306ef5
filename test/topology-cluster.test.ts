/**
 * Two gateways on a real 3-master Redis Cluster: login, proxied call, refresh
 * rotation and reuse detection, logout and logout-all across instances
 * (propagation measured), per-route rate limits counted in the cluster, and
 * the data really spread over the masters.
 */
import t from 'tap'
import { bearer, get, login, post, startAuthGateway, startEcho, startWeChat, testClock } from './helpers/auth.js'
import { startCluster } from './helpers/redis.js'
import { pollAnswer as until } from './helpers/wait.js'

const cluster = await startCluster()
t.teardown(cluster.stop)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
// 300 ms refresh grace, so that a reuse can be provoked without waiting the default 10 s.
const patch = {
  store: { type: 'redis', ...cluster.store },
  tokens: { keys: [{ kid: 'k1', secret: 'cluster-test-secret-0123456789abcdef' }], refreshGrace: '300ms' },
  routes: [
    { name: 'echo', prefix: '/api', auth: 'required', upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] },
    { name: 'limited', prefix: '/limited', auth: 'required', rateLimit: { max: 3, window: '1m', by: 'openid' }, upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] }
  ]
}
// one clock for both instances, moved by the test (the grace window is compared with it in Redis)
const clock = testClock()
const a = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, patch, now: clock.now })
const b = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, patch, now: clock.now })

/** Every key under `pattern` on each master, by master port. */
async function keysByMaster (pattern: string): Promise<Map<number, string[]>> {
  const out = new Map<number, string[]>()
  const masters = await cluster.masters()
  for (const [i, r] of masters.entries()) {
    const keys: string[] = []
    let cursor = '0'
    do {
      const [next, batch] = await r.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      keys.push(...batch)
    } while (cursor !== '0')
    out.set(cluster.ports[i], keys)
  }
  return out
}

t.test('on a cluster: both instances ready; login on A, proxied call on B, refresh rotation, reuse detection', async (t) => {
  for (const gw of [a, b]) {
    const ready = await fetch(gw.adminUrl + '/readyz')
    t.equal(ready.status, 200, 'ready on the cluster')
    await ready.body?.cancel()
  }
  const d = await login(a.url, 'u-cl1-1')
  const res = await get(b.url + '/api/me', bearer(d.accessToken))
  t.equal(res.status, 200, 'B accepts what A minted')
  t.equal(JSON.parse(res.text).headers['x-openid'], d.openid, 'identity from the token')

  const child = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(child.status, 200, 'B rotates A\'s refresh token (the family script runs on one slot)')
  const retry = await post(a.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(retry.json?.data.refreshToken, child.json?.data.refreshToken, 'a retry within the grace window gets the same child on A')
  const grandchild = await post(a.url + '/auth/refresh', { refreshToken: child.json?.data.refreshToken })
  t.equal(grandchild.status, 200, 'the child rotates in turn')
  clock.advance(400)
  const reused = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(reused.json?.code, 20011, 'a spent token presented after the grace window is a reuse')
  const { last, ms } = await until(() => get(a.url + '/api/me', bearer(grandchild.json?.data.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`A denied the reused family ${ms.toFixed(1)} ms after B detected the reuse`)
  t.equal(last.json?.code, 20006, 'every access token of the family is denied on A')
  t.equal((await post(a.url + '/auth/refresh', { refreshToken: grandchild.json?.data.refreshToken })).json?.code, 20010, 'the latest child is dead')
})

t.test('on a cluster: logout on A is refused by B within 1 s; logout-all on B ends A\'s sessions', async (t) => {
  const d = await login(a.url, 'u-cl2-1')
  t.equal((await get(b.url + '/api/me', bearer(d.accessToken))).status, 200, 'B accepts it before the logout')
  t.equal((await post(a.url + '/auth/logout', {}, bearer(d.accessToken))).status, 200)
  const { last, ms } = await until(() => get(b.url + '/api/me', bearer(d.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`cluster: B rejected the logged-out token ${ms.toFixed(1)} ms after A answered the logout`)
  t.equal(last.json?.code, 20006)
  t.equal((await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })).json?.code, 20010, 'the family is dead on B too')

  const one = await login(a.url, 'u-cl3-1')
  const mine = await login(b.url, 'u-cl3-2')
  t.equal((await post(b.url + '/auth/logout', { all: true }, bearer(mine.accessToken))).status, 200)
  const all = await until(() => get(a.url + '/api/me', bearer(one.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`cluster: A rejected after logout-all on B in ${all.ms.toFixed(1)} ms`)
  t.equal(all.last.json?.code, 20006)
  t.equal((await post(a.url + '/auth/refresh', { refreshToken: one.refreshToken })).status, 401, 'older families ended')
})

t.test('on a cluster: a per-route rate limit is counted in the cluster, across both instances', async (t) => {
  const d = await login(a.url, 'u-cl4-1')
  const statuses: number[] = []
  for (const gw of [a, b, a, b]) statuses.push((await get(gw.url + '/limited/x', bearer(d.accessToken))).status)
  t.same(statuses, [200, 200, 200, 429], 'the 4th call in the window is refused, whichever instance gets it')
  const counters = [...(await keysByMaster('wegate:rl:*')).values()].flat().filter((k) => k.includes(d.openid))
  t.equal(counters.length, 1, 'one counter key for this caller, in the cluster')
  t.equal(await cluster.client().get(counters[0]), '4', 'it counted every call')
  const other = await login(b.url, 'u-cl5-1')
  t.equal((await get(a.url + '/limited/x', bearer(other.accessToken))).status, 200, 'another caller has their own counter')
})

t.test('on a cluster: sessions are spread over the masters (not one node in disguise)', async (t) => {
  for (let i = 0; i < 12; i++) await login(i % 2 === 0 ? a.url : b.url, `u-spread${i}-1`)
  const byMaster = await keysByMaster('wegate:{fam:*')
  const holding = [...byMaster.values()].filter((keys) => keys.length > 0).length
  t.ok(holding >= 2, `refresh families on ${holding} of ${cluster.ports.length} masters`)
  t.same([...byMaster.values()].flat().filter((k) => k.startsWith('wegate:{fam:') && !/^wegate:\{fam:[^}]+\}:(meta|spent|grace:.+)$/.test(k)), [],
    'every family key carries its family hash tag')
})
