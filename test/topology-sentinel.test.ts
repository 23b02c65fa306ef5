/**
 * Two gateways through a real Sentinel (master + replica + sentinel): they work,
 * then the master is killed and the sentinel promotes the replica. Meanwhile
 * the store fails fast (503, no hang); afterwards both gateways recover on their
 * own, without a restart: ready again, logins work, sessions from before the
 * failover survive, and revocations made after it are honoured everywhere.
 */
import t from 'tap'
import { bearer, get, login, post, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'
import { startSentinel } from './helpers/redis.js'
import { pollAnswer as until } from './helpers/wait.js'

const sentinel = await startSentinel()
t.teardown(sentinel.stop)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const patch = {
  store: { type: 'redis', ...sentinel.store },
  tokens: { keys: [{ kid: 'k1', secret: 'sentinel-test-secret-0123456789abcdef' }] }
}
const a = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, patch })
const b = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, patch })

const readyz = (adminUrl: string) => get(adminUrl + '/readyz')

t.test('through sentinel: login on A, proxied call and refresh on B, logout on A refused by B', async (t) => {
  t.equal((await readyz(a.adminUrl)).status, 200, 'ready')
  const d = await login(a.url, 'u-sn1-1')
  t.equal((await get(b.url + '/api/me', bearer(d.accessToken))).status, 200)
  const r = await post(b.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(r.status, 200, 'rotation through the master the sentinel names')
  t.equal((await post(a.url + '/auth/logout', {}, bearer(r.json?.data.accessToken))).status, 200)
  const { last, ms } = await until(() => get(b.url + '/api/me', bearer(r.json?.data.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`sentinel: B rejected the logged-out token ${ms.toFixed(1)} ms after A answered the logout`)
  t.equal(last.json?.code, 20006)
})

t.test('the master dies: the store fails fast, the sentinel promotes the replica, both gateways recover without a restart', async (t) => {
  const before = await login(a.url, 'u-sn2-1')
  await sentinel.waitReplicated() // so the failover loses nothing this test relies on
  const { old, promoted } = await sentinel.killMaster()
  const t0 = performance.now()

  const during = await post(a.url + '/auth/login', { code: 'u-sn3-1' })
  t.equal(during.status, 503, 'a login while there is no master is refused…')
  t.equal(during.json?.code, 50010, '…as STORE_UNAVAILABLE')
  t.comment(`login during the failover answered 503 in ${(performance.now() - t0).toFixed(0)} ms after the kill`)

  const now = await promoted
  t.not(now, old, 'the sentinel names the former replica as master')
  t.comment(`sentinel promoted the replica ${(performance.now() - t0).toFixed(0)} ms after the kill`)
  for (const [name, gw] of [['A', a], ['B', b]] as const) {
    const { last } = await until(() => readyz(gw.adminUrl), (x) => x.status === 200, 15_000)
    t.equal(last.status, 200, `${name} is ready again by itself`)
    t.comment(`${name} ready again ${(performance.now() - t0).toFixed(0)} ms after the master was killed`)
  }

  const after = await login(b.url, 'u-sn4-1')
  t.equal((await get(a.url + '/api/me', bearer(after.accessToken))).status, 200, 'logins work again, on the new master')
  t.equal((await get(b.url + '/api/me', bearer(before.accessToken))).status, 200, 'an access token from before the failover still works')
  const rotated = await post(a.url + '/auth/refresh', { refreshToken: before.refreshToken })
  t.equal(rotated.status, 200, 'a refresh family from before the failover survived it (replicated)')

  t.equal((await post(b.url + '/auth/logout', {}, bearer(after.accessToken))).status, 200, 'logout after the failover')
  const { last, ms } = await until(() => get(a.url + '/api/me', bearer(after.accessToken)), (x) => x.status === 401, 1000)
  t.comment(`after the failover: A rejected the token logged out on B in ${ms.toFixed(1)} ms`)
  t.equal(last.json?.code, 20006, 'a revocation made after the failover is honoured by the other instance')
  t.equal((await post(a.url + '/auth/refresh', { refreshToken: after.refreshToken })).json?.code, 20010, 'and its family is dead')
})
