/**
 * `workers: 2`: a reloaded AppSecret reaches the primary's /wechat/access-token (the
 * workers report the config they applied; the primary reads the same file and follows),
 * and its /readyz names the reloaded config.
 */
import { writeFile } from 'node:fs/promises'
import t from 'tap'
import { stringify } from 'yaml'
import { APP_A, get, post, startEcho } from './helpers/auth.js'
import { baseConfig, merge, writeConfigFile } from './helpers/gateway.js'
import { ADMIN_TOKEN, hubConfig, SAMPLE_APP, startHubEmulator } from './helpers/hub.js'
import { startGatewayProcess } from './helpers/process.js'
import { startRedis } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'

t.test('regression: the workers\' primary serves the AppSecret of a reloaded config, without a restart', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const echoUrl = await startEcho(t)
  // WeChat knows the rotated secret; the file still has the old one.
  const rotated = { ...APP_A, secret: 'rotated-app-secret' }
  const { emu, url: wechatUrl } = await startHubEmulator(t, { apps: [rotated, SAMPLE_APP] })
  const patch = (app: typeof APP_A): Record<string, unknown> => {
    const p = { ...hubConfig({ wechatUrl, echoUrl, redisUrl: redis.url, apiToken: ADMIN_TOKEN }), workers: 2 }
    return merge(p, { wechat: { apps: [app, SAMPLE_APP] } })
  }
  const file = await writeConfigFile(patch(APP_A))
  const gw = await startGatewayProcess(t, file)
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` }
  const tokenUrl = `${gw.adminUrl}/wechat/access-token?appId=${APP_A.appId}`
  const readyz = async () => (await get(`${gw.adminUrl}/readyz`)).json as unknown as { config: string }
  const before = (await readyz()).config

  const refused = await get(tokenUrl, auth)
  t.equal(refused.status, 503, 'the old secret is refused by WeChat')
  t.equal(refused.json?.code, 50007)

  // The SRE puts the rotated secret in the file; every worker reloads it (file watch), and so does the primary.
  await writeFile(file, stringify(merge(baseConfig(), patch(rotated))))
  await waitUntil(() => gw.lines.filter((l) => l.msg === 'config reloaded').length === 2, 10_000, 20)
  // Within moments of the workers (the old primary kept the old secret until a restart: this timed out).
  await waitUntil(async () => (await readyz()).config !== before, 5000, 20)
  const after = (await readyz()).config
  t.equal(gw.lines.filter((l) => l.msg === 'config reloaded' && l.to === after).length, 2, '/readyz names the config both workers applied')

  const a = await get(tokenUrl, auth)
  t.equal(a.status, 200, 'the primary uses the reloaded secret')
  t.equal(a.json?.data.accessToken, emu.currentToken(APP_A.appId))
  const forced = await post(`${gw.adminUrl}/wechat/access-token/refresh?appId=${APP_A.appId}`, {}, auth)
  t.equal(forced.status, 200, 'and refreshes with it')

  // SIGHUP (with the file watch) reloads the group the same way: the primary follows back.
  await writeFile(file, stringify(merge(baseConfig(), patch(APP_A))))
  gw.child.kill('SIGHUP')
  const followed = () => gw.lines.filter((l) => l.msg === 'primary: config reloaded (as the workers did)').length
  await waitUntil(() => followed() === 2, 10_000, 50)
  t.equal((await readyz()).config, before, 'the primary follows back')
  t.equal(followed(), 2, 'once per config, not once per worker')
  t.equal(await gw.stop(), 0)
})
