/**
 * The automatic ramp end to end: real upstreams whose error rate and latency
 * the test sets, real requests through the gateway, the ramp's clock moved by
 * the test (intervals of 10 s pass in no time) and its ticks driven by the test.
 */
import t from 'tap'
import { request } from 'undici'
import { startGateway, testClock, writeConfigFile, type StartedGateway } from './helpers/gateway.js'
import { controlledUpstream, rampRoute, rollouts, traffic, trafficUntil } from './helpers/ramp.js'

const INTERVAL = 10_000

async function metric (gw: StartedGateway, pattern: RegExp): Promise<string | undefined> {
  const text = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  return pattern.exec(text)?.[1]
}

const decisions = (gw: StartedGateway) => gw.logs.lines.filter((l) => typeof l.action === 'string' && l.analysis !== undefined)

t.test('a healthy canary walks 5 → 20 → 50 → 100 % and is promoted; the timeline', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const gw = await startGateway(t, { routes: [rampRoute(stable, canary)] }, { now: clock.now, rolloutTickMs: 0 })
  const timeline: string[] = []
  for (const share of [5, 20, 50, 100]) {
    t.equal((await rollouts(gw).status())[0].share, share)
    const hits = await trafficUntil([gw], stable, canary, 20)
    const measured = Math.round(1000 * hits.canary / (hits.canary + hits.stable)) / 10
    await rollouts(gw).tick()
    t.equal((await rollouts(gw).status())[0].share, share, 'no decision before the interval is over')
    clock.advance(INTERVAL)
    await rollouts(gw).tick()
    const d = decisions(gw).at(-1)!
    timeline.push(`step ${share} %: measured ${measured} % (${hits.canary}/${hits.canary + hits.stable} requests) → ${d.action as string}: ${d.reason as string}`)
    if (share < 100) t.ok(Math.abs(measured - share) < Math.max(6, share * 0.5), `measured ${measured} % near ${share} %`)
    else t.equal(hits.stable, 0, 'at 100 % the stable version gets nothing')
  }
  t.comment(['timeline:', ...timeline].join('\n'))
  t.same(decisions(gw).map((d) => d.action), ['advance', 'advance', 'advance', 'promote'])
  const [s] = await rollouts(gw).status()
  t.equal(s.state, 'promoted')
  t.match(s.reason, /promote the file now/)
  t.equal(await metric(gw, /^wegate_rollout_state\{route="orders",state="promoted"\} (\d+)$/m), '1')
  t.equal(await metric(gw, /^wegate_rollout_share_percent\{route="orders"\} (\d+)$/m), '100')
  t.equal(await metric(gw, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '100')
  const s0 = stable.hits
  await traffic([gw], 40)
  t.equal(stable.hits, s0, 'promoted: the canary keeps all the traffic')
})

t.test('a canary that starts failing at 20 % is rolled back and aborted within the window', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const gw = await startGateway(t, { routes: [rampRoute(stable, canary)] }, { now: clock.now, rolloutTickMs: 0 })
  await trafficUntil([gw], stable, canary, 20)
  clock.advance(INTERVAL)
  await rollouts(gw).tick()
  t.equal((await rollouts(gw).status())[0].share, 20)
  canary.failEvery = 10 // 10 % errors
  await trafficUntil([gw], stable, canary, 20)
  clock.advance(1_000) // a tenth of the step: the window is far from over
  await rollouts(gw).tick()
  const [s] = await rollouts(gw).status()
  t.equal(s.state, 'aborted')
  t.equal(s.share, 0)
  const d = decisions(gw).at(-1)!
  t.equal(d.action, 'abort')
  t.match(d.reason, /^error rate 0\.\d+ > 0.01 at 20 %$/)
  t.ok((d.analysis as { canary: { errors: number } }).canary.errors >= 2, 'the numbers are in the log line')
  t.equal(d.msg, 'rollout aborted: canary rolled back to weight 0 until the config changes')
  const c0 = canary.hits
  t.same(await traffic([gw], 60), { 200: 60 })
  t.equal(canary.hits, c0, 'aborted: no request reaches the canary')
  t.equal(await metric(gw, /^wegate_rollout_state\{route="orders",state="aborted"\} (\d+)$/m), '1')
  t.equal(await metric(gw, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '0')
})

t.test('a slow canary (p99 over the ratio) is stopped at the end of its step', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  canary.delayMs = 250
  const gw = await startGateway(t, { routes: [rampRoute(stable, canary, { maxLatencyRatio: 1.5 })] }, { now: clock.now, rolloutTickMs: 0 })
  await trafficUntil([gw], stable, canary, 20)
  await rollouts(gw).tick()
  t.equal((await rollouts(gw).status())[0].state, 'running', 'latency is judged at the end of the step')
  clock.advance(INTERVAL)
  await rollouts(gw).tick()
  const [s] = await rollouts(gw).status()
  t.equal(s.state, 'aborted')
  t.match(s.reason, /^canary p99 [\d.]+ ms > 1.5 × stable p99 [\d.]+ ms at 5 %$/)
  t.ok(s.analysis.canary.p99! >= 250, `canary p99 ${s.analysis.canary.p99} ms`)
})

t.test('pause holds the step past its interval; resume continues; a file edit of the ramp starts a new one, other edits keep it', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const gw = await startGateway(t, { routes: [rampRoute(stable, canary)] }, { now: clock.now, rolloutTickMs: 0 })
  const r = rollouts(gw)
  await r.command('orders', 'pause')
  await trafficUntil([gw], stable, canary, 20)
  clock.advance(5 * INTERVAL)
  await r.tick()
  t.same([(await r.status())[0].state, (await r.status())[0].share], ['paused', 5], 'held past its interval')
  await r.command('orders', 'resume')
  await r.tick()
  t.same([(await r.status())[0].state, (await r.status())[0].share], ['running', 20])
  await t.rejects(r.command('orders', 'resume'), { name: 'GatewayError', errorName: 'ROLLOUT_CONFLICT', data: { reason: 'cannot resume a running ramp' } })
  await t.rejects(r.command('nope', 'pause'), { name: 'GatewayError', errorName: 'ROLLOUT_UNKNOWN' })
})

t.test('a file edit of the route\'s upstreams or ramp starts a new ramp; other edits keep the running one', async (t) => {
  const clock = testClock()
  const stable = await controlledUpstream(t, 'stable')
  const canary = await controlledUpstream(t, 'canary')
  const route = rampRoute(stable, canary)
  const gw = await startGateway(t, { routes: [route] }, { now: clock.now, rolloutTickMs: 0 })
  await trafficUntil([gw], stable, canary, 20)
  clock.advance(INTERVAL)
  await rollouts(gw).tick()
  t.equal((await rollouts(gw).status())[0].share, 20)
  const other = await gw.gateway.reload(await writeConfigFile({ routes: [{ ...route, timeout: '5s' }] }))
  t.equal(other.status, 'applied')
  t.same([(await rollouts(gw).status())[0].share, (await rollouts(gw).status())[0].state], [20, 'running'], 'a timeout edit keeps the ramp at its step')
  t.equal(gw.gateway.snapshot().routes.get('orders')!.picker.weights[1], 20, 'the new snapshot serves the step at once')
  const steps = { ...route, canary: { ...route.canary, ramp: { ...route.canary.ramp, steps: [10, 100] } } }
  t.equal((await gw.gateway.reload(await writeConfigFile({ routes: [steps] }))).status, 'applied')
  t.same([(await rollouts(gw).status())[0].share, (await rollouts(gw).status())[0].step], [10, 1], 'new steps: a new ramp from the first step')
  const moved = { ...steps, upstreams: [steps.upstreams[0], { ...steps.upstreams[1], url: stable.url }] }
  await rollouts(gw).command('orders', 'abort')
  t.equal((await gw.gateway.reload(await writeConfigFile({ routes: [moved] }))).status, 'applied')
  t.same([(await rollouts(gw).status())[0].state, (await rollouts(gw).status())[0].share], ['running', 10], 'a new canary URL after an abort: a new ramp')
})
