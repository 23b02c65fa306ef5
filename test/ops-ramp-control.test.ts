/**
 * The ramp under control: the real CLI process against a gateway's admin API,
 * and two gateways on one Redis agreeing on every step (one restarting mid-ramp).
 */
import { execFile } from 'node:child_process'
import t from 'tap'
import { request } from 'undici'
import { startGateway, testClock, writeConfigFile, type StartedGateway } from './helpers/gateway.js'
import { controlledUpstream, rampRoute, rollouts, trafficUntil } from './helpers/ramp.js'
import { startRedis } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'

const API_TOKEN = 'ramp-admin-token-0123456789abcdef-xyz'
const INTERVAL = 10_000

function cli (args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'rollout', ...args], { env: { PATH: process.env.PATH, ...env }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (typeof err.code === 'number' ? err.code : 1), stdout, stderr })
    })
  })
}

t.test('the CLI: status as a table; pause holds past the interval, resume continues, promote and abort work', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const gw = await startGateway(t, { admin: { apiToken: API_TOKEN }, routes: [rampRoute(stable, canary)] }, { now: clock.now, rolloutTickMs: 0 })
  const env = { WEGATE_ADMIN_TOKEN: API_TOKEN }
  const admin = ['--admin', gw.adminUrl]

  const noToken = await request(`${gw.adminUrl}/rollouts`)
  t.equal(noToken.statusCode, 401, 'the admin API needs admin.apiToken')
  t.equal(((await noToken.body.json()) as { code: number }).code, 20013)
  const wrong = await cli(['status', ...admin], { WEGATE_ADMIN_TOKEN: 'x'.repeat(40) })
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /Missing or wrong admin API token \(20013\)/)

  await trafficUntil([gw], stable, canary, 20)
  const status = await cli(['status', ...admin], env)
  t.equal(status.code, 0, status.stderr)
  t.comment(status.stdout)
  t.match(status.stdout, /^ROUTE\s+STEP\s+SHARE\s+REQUESTS\s+ERRORS\s+P99 CANARY\/STABLE\s+IN STEP\s+STATE\n/)
  t.match(status.stdout, /\norders\s+1\/4\s+5%\s+\d+\/\d+\s+0%\s+\d+ms\/\d+ms\s+0s\s+running\n/)

  const paused = await cli(['pause', 'orders', ...admin], env)
  t.equal(paused.code, 0, paused.stderr)
  t.match(paused.stdout, /orders\s+1\/4\s+5%.*paused\n/)
  clock.advance(3 * INTERVAL)
  await rollouts(gw).tick()
  t.match((await cli(['status', ...admin], env)).stdout, /orders\s+1\/4\s+5%.*30s\s+paused\n/, 'held past its interval')
  t.equal((await cli(['resume', 'orders', ...admin], env)).code, 0)
  await rollouts(gw).tick()
  t.match((await cli(['status', ...admin], env)).stdout, /orders\s+2\/4\s+20%.*running\n/, 'resumed: the step passed and advanced')
  const again = await cli(['resume', 'orders', ...admin], env)
  t.equal(again.code, 1)
  t.match(again.stderr, /cannot resume a running ramp \(40018\)/)
  t.match((await cli(['pause', 'nope', ...admin], env)).stderr, /No automatic ramp on this route \(30035\)/)
  t.equal((await cli(['pause', ...admin], env)).code, 2, 'a command without its route')

  const promoted = await cli(['promote', 'orders', ...admin], env)
  t.match(promoted.stdout, /orders\s+4\/4\s+100%.*promoted\n[\s\S]*promote the file now/)
  const s0 = stable.hits
  await trafficUntil([gw], stable, canary, 10, 20)
  t.equal(stable.hits, s0, 'promoted: all traffic on the canary')
  t.match((await cli(['abort', 'orders', ...admin], env)).stderr, /cannot abort a promoted ramp/)
})

t.test('the CLI finds the admin address and token in the config file; abort rolls the canary back', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const gw = await startGateway(t, { admin: { apiToken: API_TOKEN }, routes: [rampRoute(stable, canary)] }, { now: clock.now, rolloutTickMs: 0 })
  const file = await writeConfigFile({ admin: { host: '127.0.0.1', port: Number(new URL(gw.adminUrl).port), apiToken: API_TOKEN } })
  const aborted = await cli(['abort', 'orders', '-c', file])
  t.equal(aborted.code, 0, aborted.stderr)
  t.match(aborted.stdout, /orders\s+1\/4\s+0%.*aborted\n[\s\S]*aborted by an operator/)
  const c0 = canary.hits
  await trafficUntil([gw], stable, canary, 0, 40)
  t.equal(canary.hits, c0, 'aborted: nothing reaches the canary')
})

t.test('two instances on one Redis agree on every step, count each other\'s requests, and survive a restart', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const patch = { store: { type: 'redis', url: redis.url }, routes: [rampRoute(stable, canary)] }
  const all: StartedGateway[] = []
  const start = async (): Promise<StartedGateway> => {
    const gw = await startGateway(t, patch, { now: clock.now, rolloutTickMs: 0 })
    all.push(gw)
    await gw.gateway.store.ready()
    // Joined (or started) as soon as the store is up, without a tick of the test's.
    await waitUntil(() => gw.gateway.snapshot().routes.get('orders')!.picker.weights[1] > 0)
    return gw
  }
  const a = await start()
  let b = await start()
  const shares = async (): Promise<number[]> => [(await rollouts(a).status())[0].share, (await rollouts(b).status())[0].share]
  t.same(await shares(), [5, 5], 'b joined the ramp a started')
  const steps: number[][] = []
  for (const share of [5, 20, 50]) {
    const c0 = canary.hits
    await trafficUntil([a, b], stable, canary, 20)
    await rollouts(a).tick()
    await rollouts(b).tick()
    const counted = (await rollouts(a).status())[0].analysis.canary.requests
    t.equal(counted, canary.hits - c0, `step ${share} %: the canary requests of both instances are counted (${counted})`)
    clock.advance(INTERVAL)
    await rollouts(a).tick()
    await rollouts(b).tick()
    await rollouts(a).tick()
    steps.push(await shares())
    if (share === 20) {
      // b restarts mid-ramp: the new instance serves the current step from its first request.
      await b.gateway.shutdown()
      b = await start()
      t.same(await shares(), [50, 50], 'the restarted instance joined at the current step')
      t.equal(b.gateway.snapshot().routes.get('orders')!.picker.weights[1], 50, 'and its picker serves it')
    }
  }
  t.same(steps, [[20, 20], [50, 50], [100, 100]], 'both instances applied every step')
  const deciders = all.map((gw) => gw.logs.lines.filter((l) => l.msg === 'rollout advanced').length)
  t.equal(deciders.reduce((x, y) => x + y, 0), 3, `one decision per step, by the lease holder (per instance: ${deciders.join(', ')})`)
})
