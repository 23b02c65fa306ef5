/**
 * Three gateway processes on one Redis, as behind a load balancer: a token
 * minted by one is accepted by all, and a logout / logout-all on one is
 * honoured by the others (propagation time reported).
 */
import t from 'tap'
import { request } from 'undici'
import { redisFor, startWeChat } from './helpers/auth.js'
import { writeConfigFile } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'
import { startGatewayProcess, type GatewayProcess } from './helpers/process.js'
import { startUpstream } from './helpers/upstream.js'

t.test('three processes on one Redis share tokens and revocations', async (t) => {
  const redis = await redisFor(t)
  const { url: wechatUrl } = await startWeChat(t)
  const api = await startUpstream(t, 'api')
  const file = await writeConfigFile({
    store: { type: 'redis', url: redis.url },
    wechat: { baseUrl: wechatUrl },
    rateLimits: { login: { max: 100 } },
    routes: [{ name: 'api', prefix: '/api', upstreams: [{ name: 'v1', url: api.url, weight: 1 }] }]
  })
  const gws = await Promise.all([0, 1, 2].map(async () => await startGatewayProcess(t, file)))
  for (const gw of gws) {
    // readiness includes the Redis mirror being in sync
    await t.resolves(waitUntil(async () => {
      const res = await request(`${gw.adminUrl}/readyz`)
      await res.body.dump()
      return res.statusCode === 200
    }, 5000, 20), 'every instance becomes ready')
  }
  const login = async (gw: GatewayProcess, code: string) => {
    const res = await request(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code }) })
    return (await res.body.json() as { data: { accessToken: string } }).data.accessToken
  }
  const status = async (gw: GatewayProcess, token: string) => {
    const res = await request(`${gw.url}/api/me`, { headers: { authorization: `Bearer ${token}` } })
    await res.body.dump()
    return res.statusCode
  }
  /** ms until `gw` answers 401 for `token` (asserted to happen within 2 s). */
  const propagation = async (gw: GatewayProcess, token: string, started: number) => {
    await t.resolves(waitUntil(async () => await status(gw, token) === 401, 2000, 0), 'the revocation reaches the other instance')
    return Date.now() - started
  }

  const token = await login(gws[0], 'u-carol-1')
  for (const gw of gws) t.equal(await status(gw, token), 200, 'a token minted by one instance is accepted by every instance')

  let started = Date.now()
  const out = await request(`${gws[0].url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
  t.equal(out.statusCode, 200)
  await out.body.dump()
  const logoutMs = await Promise.all([propagation(gws[1], token, started), propagation(gws[2], token, started)])
  t.comment(`logout on instance 1 honoured by instances 2 and 3 after ${logoutMs.join(' ms and ')} ms`)

  // logout-all from instance 2 ends the user's other sessions everywhere
  const phone = await login(gws[0], 'u-dave-1')
  const pad = await login(gws[2], 'u-dave-2')
  started = Date.now()
  const all = await request(`${gws[1].url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${phone}`, 'content-type': 'application/json' }, body: '{"all":true}' })
  t.equal(all.statusCode, 200)
  await all.body.dump()
  const allMs = await Promise.all([propagation(gws[0], pad, started), propagation(gws[2], pad, started)])
  t.comment(`logout-all on instance 2 honoured by instances 1 and 3 after ${allMs.join(' ms and ')} ms`)

  for (const gw of gws) t.equal(await gw.stop(), 0, 'drains and exits 0')
})
