/**
 * Sessions of a mini program the gateway does not serve (issue 11.2): after a reload that
 * removes it from wechat.apps, or on another gateway sharing the Redis prefix that never
 * served it, its access tokens and refresh tokens are refused with 401 / 20014 on every
 * path — protected routes, /auth/refresh, /auth/logout — and nothing is spent.
 */
import t, { type Test as Tap } from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { APP_A, APP_B, authConfig, bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'
import { baseConfig, merge } from './helpers/gateway.js'

const redis = await redisFor(t)
const wx = await startWeChat(t, [APP_A, APP_B])
const echoUrl = await startEcho(t)
const stack = (apps: Array<typeof APP_A>) => ({ wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch: { wechat: { baseUrl: wx.url, timeout: '2s', retries: 2, apps } } })

const both = await startAuthGateway(t, stack([APP_A, APP_B]))
const onlyA = await startAuthGateway(t, stack([APP_A]))

/** Every path refuses the pair with 20014; the refresh token is left unspent. */
async function refusedEverywhere (t: Tap, base: string, pair: { accessToken: string, refreshToken: string }) {
  const api = await get(base + '/api/me', bearer(pair.accessToken))
  t.equal(api.status, 401, 'protected route: 401')
  t.equal(api.json?.code, 20014, 'protected route: SESSION_APP_UNKNOWN')
  const r = await post(base + '/auth/refresh', { refreshToken: pair.refreshToken })
  t.equal(r.status, 401, '/auth/refresh: 401')
  t.equal(r.json?.code, 20014, '/auth/refresh: SESSION_APP_UNKNOWN')
  const out = await post(base + '/auth/logout', {}, bearer(pair.accessToken))
  t.equal(out.status, 401, '/auth/logout: 401')
  t.equal(out.json?.code, 20014, '/auth/logout: SESSION_APP_UNKNOWN')
}

t.test('another gateway on the same Redis that does not serve app B refuses B\'s sessions', async (t) => {
  const b = await login(both.url, 'b-elsewhere-1', APP_B.appId)
  const a = await login(both.url, 'a-elsewhere-1', APP_A.appId)
  const before = await metric(onlyA.adminUrl, 'wegate_token_rejections_total', { reason: 'app' })
  await refusedEverywhere(t, onlyA.url, b)
  t.equal(await metric(onlyA.adminUrl, 'wegate_token_rejections_total', { reason: 'app' }) - before, 2, 'counted (route and logout)')
  t.equal((await get(onlyA.url + '/api/me', bearer(a.accessToken))).status, 200, 'app A\'s session works there')
  t.equal((await post(both.url + '/auth/refresh', { refreshToken: b.refreshToken })).status, 200,
    'B\'s refresh token was not spent by the refusal: the gateway serving B still rotates it')
})

t.test('a reload that removes app B ends B\'s sessions on that gateway', async (t) => {
  const b = await login(both.url, 'b-reload-1', APP_B.appId)
  const a = await login(both.url, 'a-reload-1', APP_A.appId)
  const res = await get(both.url + '/api/me', bearer(b.accessToken))
  t.equal(JSON.parse(res.text).headers['x-appid'], APP_B.appId, 'served while B is configured')
  const dir = await mkdtemp(join(tmpdir(), 'wegate-apps-'))
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), authConfig(stack([APP_A])))))
  t.equal((await both.gateway.reload(file)).status, 'applied')
  await refusedEverywhere(t, both.url, b)
  t.equal((await get(both.url + '/api/me', bearer(a.accessToken))).status, 200, 'app A unaffected')
  t.equal((await post(both.url + '/auth/refresh', { refreshToken: a.refreshToken })).status, 200)
})
