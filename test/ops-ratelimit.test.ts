/**
 * Rate limits shared by two instances on one Redis: the login limit per IP and
 * a per-route limit per openid, with 429 envelopes and the standard headers.
 */
import t from 'tap'
import { request } from 'undici'
import { redisFor, startWeChat } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis.js'
import { startUpstream } from './helpers/upstream.js'

t.test('login limit and per-route limit are shared between instances', async (t) => {
  const redis = await redisFor(t)
  const { url: wechatUrl, emulator } = await startWeChat(t)
  const api = await startUpstream(t, 'api')
  const patch = {
    store: { type: 'redis', url: redis.url },
    wechat: { baseUrl: wechatUrl },
    rateLimits: { login: { max: 3, window: '1m' } },
    routes: [{
      name: 'orders',
      prefix: '/orders',
      upstreams: [{ name: 'v1', url: api.url, weight: 1 }],
      rateLimit: { max: 2, window: '1m', by: 'openid' }
    }]
  }
  const a = await startGateway(t, patch)
  const b = await startGateway(t, patch)
  await a.gateway.store.ready()
  await b.gateway.store.ready()

  const login = async (url: string, code: string) => await request(`${url}/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code })
  })
  for (const [gw, code] of [[a, 'l-1'], [b, 'l-2'], [a, 'l-3']] as const) {
    const res = await login(gw.url, code)
    t.equal(res.statusCode, 200, `login ${code}`)
    t.equal(res.headers['ratelimit-limit'], '3')
    await res.body.dump()
  }
  const limited = await login(b.url, 'l-4')
  t.equal(limited.statusCode, 429, 'the 4th login from this IP is refused, on the other instance')
  const retryAfter = Number(limited.headers['retry-after'])
  t.ok(retryAfter > 0 && retryAfter <= 60, `Retry-After is set (${retryAfter})`)
  t.equal(limited.headers['ratelimit-remaining'], '0')
  t.ok(Number(limited.headers['ratelimit-reset']) > 0)
  t.match(await limited.body.json(), { code: 30001, message: 'Too many requests', data: { retryAfter: Number } })
  t.equal(emulator.codes.includes('l-4'), false, 'a refused login never reaches WeChat')

  const tokenFor = (openid: string) => a.gateway.snapshot().tokens.signAccess({ openid, appid: 'wx00000000000demo0', fid: `f-${openid}` }).token
  const call = async (url: string, openid: string) => {
    const res = await request(`${url}/orders/1`, { headers: { authorization: `Bearer ${tokenFor(openid)}` } })
    await res.body.dump()
    return res
  }
  t.equal((await call(a.url, 'oAlice')).statusCode, 200)
  t.equal((await call(b.url, 'oAlice')).statusCode, 200)
  const third = await call(a.url, 'oAlice')
  t.equal(third.statusCode, 429, "alice's third call in the window is refused (counted across both instances)")
  t.equal(third.headers['ratelimit-limit'], '2')
  t.equal((await call(b.url, 'oBob')).statusCode, 200, 'bob has his own counter')
  t.equal(api.received.length, 3, 'the refused call never reached the upstream')

  const metrics = await (await request(`${a.adminUrl}/metrics`)).body.text()
  t.match(metrics, /^wegate_rate_limited_total\{route="orders"\} 1$/m)
  const metricsB = await (await request(`${b.adminUrl}/metrics`)).body.text()
  t.match(metricsB, /^wegate_rate_limited_total\{route="auth_login"\} 1$/m)
})

t.test('when Redis is down, limits let traffic through (documented policy)', async (t) => {
  const redis = await startRedis()
  const api = await startUpstream(t, 'api')
  const gw = await startGateway(t, {
    store: { type: 'redis', url: redis.url, failMode: 'open' },
    routes: [{ name: 'pub', prefix: '/pub', auth: 'public', upstreams: [{ name: 'v1', url: api.url, weight: 1 }], rateLimit: { max: 1, window: '1m', by: 'ip' } }]
  })
  await gw.gateway.store.ready()
  await redis.stop()
  for (let i = 0; i < 3; i++) {
    const res = await request(`${gw.url}/pub/x`)
    t.equal(res.statusCode, 200, `request ${i + 1} passes with Redis down`)
    await res.body.dump()
  }
})
