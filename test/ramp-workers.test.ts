/**
 * `workers: 2`: the primary's admin port answers the ramp endpoints (relayed to a ready
 * worker), so `wegate rollout …` works against a multi-worker gateway like a single one,
 * and a command reaches every worker's picker. With no worker to ask: 503 WORKERS_UNAVAILABLE.
 */
import { execFile } from 'node:child_process'
import t from 'tap'
import { request } from 'undici'
import { writeConfigFile } from './helpers/gateway.js'
import { startGatewayProcess } from './helpers/process.js'
import { controlledUpstream, rampRoute } from './helpers/ramp.js'
import { startRedis } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'

const API_TOKEN = 'ramp-admin-token-0123456789abcdef-xyz'

function cli (args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'rollout', ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

t.test('regression: wegate rollout status|pause|resume|abort against a workers: 2 gateway', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  // 10 min steps: the real clock never advances the ramp during the test; only the commands move it.
  const file = await writeConfigFile({
    workers: 2,
    store: { type: 'redis', url: redis.url },
    admin: { apiToken: API_TOKEN },
    routes: [rampRoute(stable, canary, { interval: '10m' })]
  })
  const gw = await startGatewayProcess(t, file)
  const env = { WEGATE_ADMIN_TOKEN: API_TOKEN }
  const admin = ['--admin', gw.adminUrl]
  const readyz = async (): Promise<number> => { const r = await request(`${gw.adminUrl}/readyz`); await r.body.dump(); return r.statusCode }
  await waitUntil(async () => await readyz() === 200, 15_000, 50)

  const noToken = await request(`${gw.adminUrl}/rollouts`)
  t.equal(noToken.statusCode, 401, 'the primary asks for admin.apiToken like a single gateway')
  t.equal(((await noToken.body.json()) as { code: number }).code, 20013)
  const described = await request(`${gw.adminUrl}/openapi.json`)
  t.equal(described.statusCode, 200, 'the OpenAPI document, from a worker (the primary has no public routes)')
  t.ok('/auth/login' in ((await described.body.json()) as { paths: object }).paths)

  const status = await cli(['status', ...admin], env)
  t.equal(status.code, 0, status.stderr)
  t.match(status.stdout, /\norders\s+1\/4\s+5%\s+\d+\/\d+\s+0%\s+\S+\s+\d+s\s+running\n/, 'status from the primary\'s admin port')

  const paused = await cli(['pause', 'orders', ...admin], env)
  t.equal(paused.code, 0, paused.stderr)
  t.match(paused.stdout, /orders\s+1\/4\s+5%.*paused\n/)
  // The same API without the CLI (its output is tested on one process): each call is answered by
  // whichever worker is asked, and every one sees the pause.
  const api = async (method: 'GET' | 'POST', path: string): Promise<{ status: number, body: { code: number, data: unknown } }> => {
    const r = await request(`${gw.adminUrl}${path}`, { method, headers: { authorization: `Bearer ${API_TOKEN}` } })
    return { status: r.statusCode, body: await r.body.json() as { code: number, data: unknown } }
  }
  const state = async (): Promise<unknown> => ((await api('GET', '/rollouts')).body.data as { rollouts: Array<{ state: string }> }).rollouts[0].state
  t.same([await state(), await state()], ['paused', 'paused'], 'both workers read the paused ramp')
  t.match(await api('POST', '/rollouts/orders/resume'), { status: 200, body: { code: 200, data: { state: 'running', share: 5 } } })
  t.equal(await state(), 'running', 'resumed')
  t.match(await api('POST', '/rollouts/nope/pause'), { status: 404, body: { code: 30035 } })
  t.match(await api('POST', '/rollouts/orders/resume'), { status: 409, body: { code: 40018, data: { reason: /cannot resume a running ramp/ } } })

  const aborted = await cli(['abort', 'orders', ...admin], env)
  t.equal(aborted.code, 0, aborted.stderr)
  t.match(aborted.stdout, /orders\s+1\/4\s+0%.*aborted\n[\s\S]*aborted by an operator/)
  // Both workers read the record at their next tick (1 s): then 100 requests on fresh connections reach no canary.
  const burst = async (): Promise<number> => {
    const c0 = canary.hits
    for (let i = 0; i < 100; i++) {
      const r = await request(`${gw.url}/orders/${i}`, { headers: { connection: 'close' } })
      await r.body.dump()
    }
    return canary.hits - c0
  }
  await waitUntil(async () => await burst() === 0, 10_000, 100)
  t.equal(await burst(), 0, 'aborted on every worker: nothing reaches the canary')
  const workers = gw.lines.filter((l) => l.msg === 'worker listening').map((l) => Number(l.pid))
  t.equal(new Set(workers).size, 2)

  // No worker to ask (both just died; replacements start 1 s later): a clear 503, not a hang.
  for (const pid of workers) process.kill(pid, 'SIGKILL')
  await waitUntil(() => gw.lines.filter((l) => l.msg === 'worker exited; starting a new one').length === 2, 5000)
  const none = await request(`${gw.adminUrl}/rollouts`, { headers: { authorization: `Bearer ${API_TOKEN}` } })
  t.equal(none.statusCode, 503)
  t.match(await none.body.json(), { code: 50032, data: null })
  await waitUntil(async () => await readyz() === 200, 20_000, 50)
  t.match(await api('GET', '/rollouts'), { status: 200, body: { data: { rollouts: [{ route: 'orders', state: 'aborted', share: 0 }] } } }, 'the new workers answer, from the shared ramp')
  t.equal(await gw.stop(), 0)
})
