/**
 * buildGateway's clock (`now`) reaches every time-dependent part: the token
 * service (exp), the guard, the /auth handlers and the store (refresh family
 * expiry), on both stores. No test waits for real time to pass.
 */
import t from 'tap'
import { authConfig, bearer, get, login, post, redisFor, startEcho, startWeChat } from './helpers/auth.js'
import { startGateway, testClock } from './helpers/gateway.js'

const MIN = 60_000

for (const store of ['memory', 'redis'] as const) {
  t.test(`token and refresh lifetimes follow the injected clock (${store} store)`, async (t) => {
    const wechat = await startWeChat(t)
    const echoUrl = await startEcho(t)
    const redisUrl = store === 'redis' ? (await redisFor(t)).url : undefined
    const clock = testClock()
    const { gateway, url } = await startGateway(t, authConfig({
      wechatUrl: wechat.url,
      echoUrl,
      redisUrl,
      patch: { tokens: { accessTtl: '5m', refreshTtl: '1h', clockSkew: '30s' } }
    }), { now: clock.now })
    await gateway.store.ready(5000)

    const pair = await login(url, `u-clock-${store}-1`)
    t.equal((await get(`${url}/api/x`, bearer(pair.accessToken))).status, 200, 'fresh access token accepted')

    clock.advance(5 * MIN + 29_000) // within exp + clockSkew
    t.equal((await get(`${url}/api/x`, bearer(pair.accessToken))).status, 200, 'still inside the skew')
    clock.advance(2_000)
    t.match((await get(`${url}/api/x`, bearer(pair.accessToken))).json, { code: 20004 }, 'expired once exp + clockSkew passed')

    const refreshed = await post(`${url}/auth/refresh`, { refreshToken: pair.refreshToken })
    t.equal(refreshed.status, 200, 'the refresh token outlives the access token')
    const next = refreshed.json?.data as { accessToken: string, refreshToken: string }
    t.equal((await get(`${url}/api/x`, bearer(next.accessToken))).status, 200, 'the new access token is valid at the moved time')

    clock.advance(61 * MIN)
    t.match(await post(`${url}/auth/refresh`, { refreshToken: next.refreshToken }), { status: 401, json: { code: 20012 } }, 'the family expired with the clock')
  })
}
