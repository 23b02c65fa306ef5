/**
 * /auth/phone and /auth/decrypt have limits of their own, per caller (rateLimits.phone,
 * rateLimits.decrypt): past them a 429 envelope with Retry-After, counted, and — for
 * /auth/phone — no WeChat API call spent on the app's shared access_token quota.
 */
import t from 'tap'
import { APP_A, bearer, login, metric, post, startEcho } from './helpers/auth.js'
import { baseConfig, startGateway } from './helpers/gateway.js'
import { hubConfig, SAMPLE_APP, sampleCode, startHubEmulator } from './helpers/hub.js'
import { startRedis } from './helpers/redis.js'
import { OFFICIAL_SAMPLE } from './helpers/wechat-sample.js'
import { parseConfig } from '../src/config/load.js'
import { stringify } from 'yaml'

const { encryptedData, iv } = OFFICIAL_SAMPLE

t.test('the defaults: phone 5 per minute, decrypt 30 per minute, per openid', async (t) => {
  const c = parseConfig(stringify(baseConfig()))
  t.same(c.rateLimits.phone, { max: 5, window: 60_000, by: 'openid' })
  t.same(c.rateLimits.decrypt, { max: 30, window: 60_000, by: 'openid' })
  t.same(c.rateLimits.session, { max: 30, window: 60_000, by: 'openid' })
})

t.test('regression: /auth/phone past rateLimits.phone → 429 30001 with Retry-After, per caller, shared by instances, WeChat not asked', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const echoUrl = await startEcho(t)
  const { emu, url: wechatUrl } = await startHubEmulator(t)
  const cfg = { ...hubConfig({ wechatUrl, echoUrl, redisUrl: redis.url }), rateLimits: { login: { max: 1000 }, phone: { max: 3, window: '1m' } } }
  const gwA = await startGateway(t, cfg)
  const gwB = await startGateway(t, cfg)
  await Promise.all([gwA.gateway.store.ready(5000), gwB.gateway.store.ready(5000)])
  const ann = await login(gwA.url, 'u-ann-1', APP_A.appId)
  const phone = (url: string, token: string, i: number) => post(url + '/auth/phone', { code: `phone-1380013800${i}` }, bearer(token))

  // Three calls over two instances: one counter in Redis.
  for (const [i, url] of [gwA.url, gwB.url, gwA.url].entries()) {
    const a = await phone(url, ann.accessToken, i)
    t.equal(a.status, 200, `call ${i + 1} answered`)
    t.equal(a.headers.get('ratelimit-limit'), '3')
    t.equal(a.headers.get('ratelimit-remaining'), String(2 - i))
  }
  const spent = emu.phoneCalls
  const over = await phone(gwB.url, ann.accessToken, 4)
  t.equal(over.status, 429)
  t.match(over.json, { code: 30001, message: 'Too many requests', data: { retryAfter: Number } })
  t.ok(Number(over.headers.get('retry-after')) > 0 && Number(over.headers.get('retry-after')) <= 60, `Retry-After: ${over.headers.get('retry-after')}`)
  t.equal(over.headers.get('ratelimit-remaining'), '0')
  t.equal(emu.phoneCalls, spent, 'no WeChat call for a refused request')
  t.equal(await metric(gwB.adminUrl, 'wegate_rate_limited_total', { route: 'auth_phone' }), 1, 'counted like the other limiters')

  // Another user of the same app (same IP) has a counter of their own.
  const bob = await login(gwA.url, 'u-bob-1', APP_A.appId)
  t.equal((await phone(gwA.url, bob.accessToken, 5)).status, 200, 'per openid, not per IP')
  // No token: refused as unauthenticated, before any counting.
  t.equal((await post(gwA.url + '/auth/phone', { code: 'phone-13800138009' })).status, 401)
})

t.test('regression: /auth/decrypt past rateLimits.decrypt → 429 30001 with Retry-After, counted', async (t) => {
  const echoUrl = await startEcho(t)
  const { url: wechatUrl } = await startHubEmulator(t)
  const gw = await startGateway(t, { ...hubConfig({ wechatUrl, echoUrl }), rateLimits: { login: { max: 1000 }, decrypt: { max: 2, window: '1m' } } })
  const pair = await login(gw.url, sampleCode('rl'), SAMPLE_APP.appId)
  const decrypt = () => post(gw.url + '/auth/decrypt', { encryptedData, iv }, bearer(pair.accessToken))
  t.same([(await decrypt()).status, (await decrypt()).status], [200, 200])
  const over = await decrypt()
  t.equal(over.status, 429)
  t.equal(over.json?.code, 30001)
  t.ok(Number(over.headers.get('retry-after')) > 0)
  t.equal(await metric(gw.adminUrl, 'wegate_rate_limited_total', { route: 'auth_decrypt' }), 1)
  t.equal(await metric(gw.adminUrl, 'wegate_decrypts_total', { app: SAMPLE_APP.appId, result: 'ok' }), 2, 'a refused call is not a decrypt')
})

t.test('regression: /auth/session past rateLimits.session → 429 30001, WeChat\'s checksession not asked', async (t) => {
  const echoUrl = await startEcho(t)
  const { emu, url: wechatUrl } = await startHubEmulator(t)
  const gw = await startGateway(t, { ...hubConfig({ wechatUrl, echoUrl }), rateLimits: { login: { max: 1000 }, session: { max: 2, window: '1m' } } })
  const pair = await login(gw.url, sampleCode('rs'), SAMPLE_APP.appId)
  const check = async () => {
    const r = await fetch(gw.url + '/auth/session', { headers: bearer(pair.accessToken) })
    return { status: r.status, json: await r.json() as { code: number, data: unknown }, retryAfter: r.headers.get('retry-after') }
  }
  const first = await check()
  t.match(first, { status: 200, json: { code: 200, data: { sessionKeyValid: true } } })
  t.equal((await check()).status, 200)
  const asked = emu.checkCalls
  const over = await check()
  t.equal(over.status, 429)
  t.equal(over.json.code, 30001)
  t.ok(Number(over.retryAfter) > 0, `Retry-After: ${over.retryAfter}`)
  t.equal(emu.checkCalls, asked, 'no checksession call for a refused request')
  t.equal(await metric(gw.adminUrl, 'wegate_rate_limited_total', { route: 'auth_session' }), 1)
})

t.test('regression: a route named `login` limited by ip does not share /auth/login\'s counter (Redis)', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const echoUrl = await startEcho(t)
  const { url: wechatUrl } = await startHubEmulator(t)
  const base = hubConfig({ wechatUrl, echoUrl, redisUrl: redis.url })
  const cfg = {
    ...base,
    rateLimits: { login: { max: 3, window: '1m', by: 'ip' } },
    routes: [{ name: 'login', prefix: '/api/login', auth: 'public', rateLimit: { max: 2, window: '1m', by: 'ip' }, upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] }]
  }
  const gw = await startGateway(t, cfg)
  await gw.gateway.store.ready(5000)
  const statuses: number[] = []
  for (let i = 0; i < 4; i++) statuses.push((await fetch(gw.url + '/api/login/x')).status)
  t.same(statuses, [200, 200, 429, 429], 'the route\'s own limit')
  // Before the fix both counters were `login:ip:<ip>`: four route hits used up the login limit.
  for (let i = 0; i < 3; i++) {
    const r = await post(gw.url + '/auth/login', { code: sampleCode(`rk${i}`), appId: SAMPLE_APP.appId })
    t.equal(r.status, 200, `login ${i + 1} of 3 allowed`)
  }
  t.equal((await post(gw.url + '/auth/login', { code: sampleCode('rk9'), appId: SAMPLE_APP.appId })).status, 429, 'the login limit itself still holds')
})
