/**
 * `workers: 2` through the real CLI: the primary serves the admin port, so it serves
 * the shared access_token too — the same token the workers use, from the same Redis.
 */
import t from 'tap'
import { APP_A, bearer, get, login, post, startEcho } from './helpers/auth.js'
import { writeConfigFile } from './helpers/gateway.js'
import { ADMIN_TOKEN, hubConfig, startHubEmulator } from './helpers/hub.js'
import { startGatewayProcess } from './helpers/process.js'
import { startRedis } from './helpers/redis.js'

t.test('the workers\' primary serves /wechat/access-token; workers and backends share one token', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const echoUrl = await startEcho(t)
  const { emu, url: wechatUrl } = await startHubEmulator(t)
  const file = await writeConfigFile({ ...hubConfig({ wechatUrl, echoUrl, redisUrl: redis.url, apiToken: ADMIN_TOKEN }), workers: 2 })
  const gw = await startGatewayProcess(t, file)
  const tokenUrl = `${gw.adminUrl}/wechat/access-token?appId=${APP_A.appId}`

  t.equal((await get(tokenUrl)).status, 401, 'the admin token is required there too')
  const a = await get(tokenUrl, { authorization: `Bearer ${ADMIN_TOKEN}` })
  t.equal(a.status, 200)
  t.equal(a.json?.data.accessToken, emu.currentToken(APP_A.appId))

  const pair = await login(gw.url, 'u-olga-1', APP_A.appId)
  const phones = await Promise.all(Array.from({ length: 10 }, (_, i) => post(gw.url + '/auth/phone', { code: `w-${i}` }, bearer(pair.accessToken))))
  t.same(phones.map((p) => p.status), Array(10).fill(200))
  t.equal(emu.tokenCalls, 1, 'the workers used the token the primary fetched')
  t.equal(await gw.stop(), 0)
})
