import t from 'tap'
import { APP_A, bearer, get, login, metric, post, redisFor, startEcho } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { hubConfig, startHubEmulator } from './helpers/hub.js'
import { openWs, startWsUpstream } from './helpers/websocket.js'

const echoUrl = await startEcho(t)
const { emu, url: wechatUrl } = await startHubEmulator(t)
const redis = await redisFor(t)
const cfg = hubConfig({ wechatUrl, echoUrl, redisUrl: redis.url })
// One clock for both instances: a test moves it past the 30 s between forced refreshes.
let clock = Date.now()
const now = () => clock
const gwA = await startGateway(t, cfg, { now })
const gwB = await startGateway(t, cfg, { now })
await Promise.all([gwA.gateway.store.ready(5000), gwB.gateway.store.ready(5000)])

/** What the echo upstream received. */
async function upstreamHeaders (url: string, headers: Record<string, string>): Promise<Record<string, unknown>> {
  const a = await get(url, headers)
  if (a.status !== 200) throw new Error(`${url}: ${a.status} ${a.text}`)
  return (JSON.parse(a.text) as { headers: Record<string, unknown> }).headers
}

t.test('the phone button\'s code → the verified number, kept with the session; X-Phone-Number only on injectPhone routes', async (t) => {
  const pair = await login(gwA.url, 'u-hana-1', APP_A.appId)
  const before = await upstreamHeaders(gwA.url + '/api/phone/x', { ...bearer(pair.accessToken), 'x-phone-number': '+8610000000000' })
  t.equal(before['x-phone-number'], undefined, 'not verified yet: nothing, and the client\'s copy is gone')

  const a = await post(gwA.url + '/auth/phone', { code: 'phone-13812345678' }, bearer(pair.accessToken))
  t.equal(a.status, 200)
  t.same(a.json, { code: 200, message: 'ok', data: { phoneNumber: '13812345678', purePhoneNumber: '13812345678', countryCode: '86' } })

  // Kept in the shared store: the other instance injects it too.
  for (const gw of [gwA, gwB]) {
    const h = await upstreamHeaders(gw.url + '/api/phone/x', { ...bearer(pair.accessToken), 'X-Phone-Number': '+8610000000000' })
    t.equal(h['x-phone-number'], '+8613812345678', 'the verified number, not the client\'s')
  }
  const plain = await upstreamHeaders(gwA.url + '/api/plain/x', bearer(pair.accessToken))
  t.equal(plain['x-phone-number'], undefined, 'a route without injectPhone gets no number')
  t.notOk(gwA.logs.text().includes('13812345678'), 'the number is not logged')
  t.equal(await metric(gwA.adminUrl, 'wegate_phone_verifications_total', { app: APP_A.appId, result: 'ok' }), 1)
})

t.test('a client-sent X-Phone-Number is stripped in every spelling, on every route', async (t) => {
  const pair = await login(gwA.url, 'u-ivan-1', APP_A.appId)
  for (const path of ['/api/phone/x', '/api/plain/x']) {
    for (const name of ['X-Phone-Number', 'x-phone-number', 'X_Phone_Number', 'x-PHONE-number']) {
      const h = await upstreamHeaders(gwA.url + path, { ...bearer(pair.accessToken), [name]: '+8610000000000' })
      t.equal(h['x-phone-number'], undefined, `${path} ${name}`)
      t.equal(h[name.toLowerCase()], undefined, `${path} ${name} (as sent)`)
    }
  }
  const anon = await upstreamHeaders(gwA.url + '/api/plain/x', { 'x-phone-number': '+8610000000000' })
  t.equal(anon['x-phone-number'], undefined, 'anonymous caller on an optional route')
})

t.test('getuserphonenumber errcodes become clear envelopes', async (t) => {
  const pair = await login(gwA.url, 'u-jade-1', APP_A.appId)
  const cases: Array<[string, number, number]> = [
    ['err40029-a', 400, 10009],
    ['err45011-a', 503, 50006],
    ['err-1-a', 503, 50001],
    ['err40013-a', 503, 50007],
    ['otherapp-a', 502, 50003]
  ]
  for (const [code, status, envelope] of cases) {
    const a = await post(gwA.url + '/auth/phone', { code }, bearer(pair.accessToken))
    t.equal(a.status, status, code)
    t.equal(a.json?.code, envelope, code)
  }
  const used = await post(gwA.url + '/auth/phone', { code: 'phone-13900000000' }, bearer(pair.accessToken))
  t.equal(used.status, 200)
  t.equal((await post(gwA.url + '/auth/phone', { code: 'phone-13900000000' }, bearer(pair.accessToken))).json?.code, 10009, 'a used code')
  t.equal((await post(gwA.url + '/auth/phone', {}, bearer(pair.accessToken))).json?.code, 40001, 'no code')
  t.equal((await post(gwA.url + '/auth/phone', { code: 'x' })).json?.code, 20001, 'no token')
  t.equal(await metric(gwA.adminUrl, 'wegate_phone_verifications_total', { app: APP_A.appId, result: 'invalid_code' }), 2)
})

t.test('two gateways on one Redis: 200 phone calls, exactly one stable_token call', async (t) => {
  emu.rotateToken(APP_A.appId)
  await redis.client().del('wegate:{wxtoken:' + APP_A.appId + '}')
  const [a, b] = await Promise.all([login(gwA.url, 'u-kai-1', APP_A.appId), login(gwB.url, 'u-lin-1', APP_A.appId)])
  const calls = emu.tokenCalls
  const answers = await Promise.all(Array.from({ length: 200 }, (_, i) => i % 2 === 0
    ? post(gwA.url + '/auth/phone', { code: `phone-1380000${String(i).padStart(4, '0')}` }, bearer(a.accessToken))
    : post(gwB.url + '/auth/phone', { code: `phone-1390000${String(i).padStart(4, '0')}` }, bearer(b.accessToken))))
  t.same(answers.map((x) => x.status), Array(200).fill(200))
  t.equal(emu.tokenCalls - calls, 1, 'one stable_token call for 200 phone calls on two instances')
})

t.test('the token rotated behind wegate\'s back: refreshed once, the call succeeds; 20 concurrent 40001s → one forced refresh', async (t) => {
  const pair = await login(gwA.url, 'u-mei-1', APP_A.appId)
  t.equal((await post(gwA.url + '/auth/phone', { code: 'rot-0' }, bearer(pair.accessToken))).status, 200)
  emu.rotateToken(APP_A.appId)
  const forced = emu.forcedRefreshes
  t.equal((await post(gwB.url + '/auth/phone', { code: 'rot-1' }, bearer(pair.accessToken))).status, 200)
  t.equal(emu.forcedRefreshes - forced, 1, 'one forced refresh')

  // After the minimum interval (30 s) another rotation: 20 calls at once on both instances.
  clock += 31_000
  const forcedBefore = emu.forcedRefreshes
  emu.rotateToken(APP_A.appId)
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) =>
    post((i % 2 === 0 ? gwA : gwB).url + '/auth/phone', { code: `burst-${i}` }, bearer(pair.accessToken))))
  t.same(answers.map((x) => x.status), Array(20).fill(200))
  t.equal(emu.forcedRefreshes - forcedBefore, 1, 'one forced refresh for 20 concurrent 40001s')
  t.ok(await metric(gwA.adminUrl, 'wegate_wechat_api_calls_total', { api: 'getuserphonenumber', errcode: '40001' }) >= 1)
})

t.test('GET /auth/session: the stored session_key checked with WeChat', async (t) => {
  const pair = await login(gwA.url, 'u-nora-1', APP_A.appId)
  const check = async () => (await get(gwB.url + '/auth/session', bearer(pair.accessToken))).json
  t.same(await check(), { code: 200, message: 'ok', data: { sessionKeyValid: true } })
  emu.expireSession(APP_A.appId, pair.openid)
  t.same((await check())?.data, { sessionKeyValid: false })
  await login(gwA.url, 'u-nora-2', APP_A.appId)
  t.same((await check())?.data, { sessionKeyValid: true }, 'a new login stores the new key')
  t.equal((await post(gwA.url + '/auth/session', {}, bearer(pair.accessToken))).status, 405)
  t.equal((await get(gwA.url + '/auth/session')).json?.code, 20001)
})

t.test('WebSocket upgrades: X-Phone-Number injected on injectPhone routes, a client copy never passes', async (t) => {
  const ws = await startWsUpstream(t, 'ws')
  const gw = await startGateway(t, {
    ...cfg,
    routes: [
      { name: 'live', prefix: '/live', injectPhone: true, upstreams: [{ name: 'v1', url: ws.url, weight: 1 }] },
      { name: 'chat', prefix: '/chat', upstreams: [{ name: 'v1', url: ws.url, weight: 1 }] }
    ]
  }, { now })
  await gw.gateway.store.ready(5000)
  const pair = await login(gw.url, 'u-pia-1', APP_A.appId)
  t.equal((await post(gw.url + '/auth/phone', { code: 'phone-13700001111' }, bearer(pair.accessToken))).status, 200)
  for (const [path, want] of [['/live/x', '+8613700001111'], ['/chat/x', undefined]] as const) {
    const o = await openWs(gw.url, path, { ...bearer(pair.accessToken), X_Phone_Number: '+8610000000000', 'x-phone-number': '+8610000000000' })
    t.equal(o.status, 101, path)
    o.ws.close()
    const h = ws.handshakes.at(-1)?.headers
    t.equal(h?.['x-phone-number'], want, path)
    t.equal(h?.['x_phone_number'], undefined, `${path}: underscore spelling gone`)
  }
})
