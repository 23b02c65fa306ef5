/**
 * Redis goes away under a running gateway: login, refresh and logout answer
 * 503 (50010) promptly instead of hanging; with failMode closed, authenticated
 * routes answer 503 too; readiness drops; when Redis is back, logins work again.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { APP_A, bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat, type Answer } from './helpers/auth.js'

const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const { url, adminUrl, logs } = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url })

/** Run a request and report how long the answer took, in ms. */
async function timed (t: Test, what: string, fn: () => Promise<Answer>): Promise<Answer> {
  const start = performance.now()
  const a = await fn()
  t.comment(`${what}: ${a.status} after ${(performance.now() - start).toFixed(0)} ms`)
  return a
}

t.test('Redis killed: login, refresh and logout answer 503 / 50010; they do not hang', async (t) => {
  const d = await login(url, 'u-down-1')
  t.equal((await get(url + '/api/me', bearer(d.accessToken))).status, 200)
  await redis.stop()

  const failures = await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'failure', errcode: 'none' })
  const callsBefore = wx.emulator.calls
  const l = await timed(t, 'login', () => post(url + '/auth/login', { code: 'u-down-2' }))
  t.equal(l.status, 503)
  t.equal(l.json?.code, 50010)
  t.equal(wx.emulator.calls, callsBefore, 'WeChat is not asked while the store is down: the code stays unspent')
  t.equal(await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'failure', errcode: 'none' }) - failures, 1,
    'regression: a login lost to the store is counted as a failed login')
  const r = await timed(t, 'refresh', () => post(url + '/auth/refresh', { refreshToken: d.refreshToken }))
  t.equal(r.status, 503)
  t.equal(r.json?.code, 50010)
  const o = await timed(t, 'logout', () => post(url + '/auth/logout', {}, bearer(d.accessToken)))
  t.equal(o.status, 503)
  t.equal(o.json?.code, 50010)
  for (const a of [l, r, o]) t.notOk(/ECONNREFUSED|ioredis|Connection is closed|stream isn't writeable/i.test(a.text), 'no library text for the client')

  // failMode closed (default): once the revocation mirror is known stale, authenticated calls are refused.
  let api: Answer | undefined
  for (let i = 0; i < 60; i++) {
    api = await get(url + '/api/me', bearer(d.accessToken))
    if (api.status === 503) break
    await sleep(50)
  }
  t.equal(api?.status, 503, 'failMode closed: a token cannot be checked for revocation, so it is refused')
  t.equal(api?.json?.code, 50010)
  const ready = await fetch(adminUrl + '/readyz')
  t.equal(ready.status, 503, 'not ready while the store is down')
  await ready.body?.cancel()
  t.match(logs.text(), /stale/, 'the operator is told')

  await redis.restart() // same port, empty data
  const calls = wx.emulator.calls
  let back: Answer | undefined
  for (let i = 0; i < 100; i++) {
    // The same code as the login that failed: it never reached WeChat, so it still works.
    back = await post(url + '/auth/login', { code: 'u-down-2' })
    if (back.status === 200) break
    await sleep(100)
  }
  t.equal(back?.status, 200, 'logins work again once Redis is back, even with the code of the failed attempt')
  t.equal(wx.emulator.calls - calls, 1, 'one code2Session call, made once the store was back')
  t.equal((await get(url + '/api/me', bearer(back?.json?.data.accessToken))).status, 200)
})
