/**
 * `workers: 2` through the real CLI on a real Redis: two gateway processes share
 * the public port; the admin port (in the primary) reports readiness of both and
 * sums their metrics; a logout on one is honoured by the other; a worker that
 * dies is replaced; SIGTERM drains both and exits 0. And the config refuses
 * several workers on the memory store.
 */
import { execFile } from 'node:child_process'
import t from 'tap'
import { request } from 'undici'
import { redisFor, startWeChat } from './helpers/auth.js'
import { writeConfigFile } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'
import { startGatewayProcess } from './helpers/process.js'
import { startServer } from './helpers/upstream.js'

t.test('wegate check refuses several workers on the memory store', async (t) => {
  const file = await writeConfigFile({ workers: 2 })
  const r = await new Promise<{ code: number, stderr: string }>((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'check', '-c', file], (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), stderr })
    })
  })
  t.equal(r.code, 1)
  t.match(r.stderr, /workers: 2 workers need store\.type redis/)
})

t.test('two workers on one Redis behave as one gateway', async (t) => {
  const redis = await redisFor(t)
  const { url: wechatUrl } = await startWeChat(t)
  // Each worker keeps its own keep-alive pool: the upstream sees one source port per worker.
  const sourcePorts = new Set<number>()
  const openids = new Set<string>()
  const api = await startServer(t, (req, res) => {
    sourcePorts.add(req.socket.remotePort ?? 0)
    openids.add(String(req.headers['x-openid']))
    res.end('ok')
  })
  const file = await writeConfigFile({
    workers: 2,
    store: { type: 'redis', url: redis.url },
    wechat: { baseUrl: wechatUrl },
    rateLimits: { login: { max: 100 } },
    routes: [{ name: 'api', prefix: '/api', upstreams: [{ name: 'v1', url: api.url, weight: 1 }] }]
  })
  const gw = await startGatewayProcess(t, file)
  const workers = gw.lines.filter((l) => l.msg === 'worker listening')
  t.equal(workers.length, 2, 'two workers started')
  t.equal(new Set(workers.map((l) => l.pid)).size, 2, 'as two processes')

  const readyz = async () => {
    const res = await request(`${gw.adminUrl}/readyz`)
    return { status: res.statusCode, body: await res.body.json() as { workers: { ready: number } } }
  }
  const untilReady = async () => { await waitUntil(async () => (await readyz()).status === 200, 10_000, 50) }
  await untilReady()
  t.match(await readyz(), { status: 200, body: { workers: { configured: 2, ready: 2 } } }, 'ready when both workers are')

  const login = await request(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"code":"u-wendy-1"}' })
  const token = (await login.body.json() as { data: { accessToken: string } }).data.accessToken
  /** One request on a connection of its own, so the primary may hand it to either worker. */
  const call = async () => {
    const res = await request(`${gw.url}/api/x`, { headers: { authorization: `Bearer ${token}`, connection: 'close' } })
    await res.body.dump()
    return res.statusCode
  }
  const statuses: number[] = []
  for (let i = 0; i < 40; i++) statuses.push(await call())
  t.same([...new Set(statuses)], [200], 'every request is served')
  t.equal(sourcePorts.size, 2, 'by both workers')
  t.equal(openids.size, 1, 'with the same verified identity')

  const metrics = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  const served = metrics.split('\n').find((l) => l.startsWith('wegate_requests_total{route="api",upstream="v1",method="GET",status_class="2xx"}'))
  t.equal(Number(served?.split(' ').pop()), 40, '/metrics sums the workers\' counters')
  t.match(metrics, /^wegate_upstream_weight\{route="api",upstream="v1"\} 1$/m, 'gauges are combined, not summed')

  const out = await request(`${gw.url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}`, connection: 'close' } })
  t.equal(out.statusCode, 200)
  await out.body.dump()
  // The other worker learns of it over Redis pub/sub (milliseconds): wait for 20 refusals in a row.
  let streak = 0
  for (let i = 0; i < 400 && streak < 20; i++) streak = await call() === 401 ? streak + 1 : 0
  t.equal(streak, 20, 'the logout is honoured by both workers')

  // A worker that dies is replaced; the group stays up.
  process.kill(Number(workers[0].pid), 'SIGKILL')
  await gw.waitLog((l) => l.msg === 'worker exited; starting a new one')
  await gw.waitLog((l) => l.msg === 'worker listening' && l.pid !== workers[0].pid && l.pid !== workers[1].pid)
  await untilReady()
  t.match(await readyz(), { status: 200, body: { workers: { ready: 2 } } }, 'a dead worker is replaced')

  t.equal(await gw.stop(), 0, 'SIGTERM drains every worker and exits 0')
  t.equal(gw.lines.filter((l) => l.msg === 'shutdown complete').length, 3, 'both workers and the primary shut down cleanly')
  t.notMatch(gw.stderr(), /DeprecationWarning|FSTDEP/, 'no deprecation warning from the primary or the workers')
})
