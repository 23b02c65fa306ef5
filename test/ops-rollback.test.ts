/**
 * Automatic canary rollback: a failing canary is taken out of rotation on the
 * instance that saw it fail and, through Redis, on every other instance.
 */
import t from 'tap'
import { request } from 'undici'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'

const route = (stable: TestUpstream, canary: TestUpstream) => ({
  name: 'orders',
  prefix: '/orders',
  auth: 'public',
  upstreams: [{ name: 'stable', url: stable.url, weight: 50 }, { name: 'canary', url: canary.url, weight: 50 }],
  canary: { sticky: 'none', rollback: { upstream: 'canary', errorRate: 0.01, window: '1m', minRequests: 20 } }
})

async function hit (gw: StartedGateway, n: number): Promise<Record<string, number>> {
  const seen: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const res = await request(`${gw.url}/orders/${i}`)
    await res.body.dump()
    const key = `${res.statusCode}`
    seen[key] = (seen[key] ?? 0) + 1
  }
  return seen
}

async function metric (gw: StartedGateway, pattern: RegExp): Promise<string | undefined> {
  const text = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  return pattern.exec(text)?.[1]
}

t.test('a failing canary is rolled back and every instance on the Redis follows', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 503 })
  const patch = { store: { type: 'redis', url: redis.url }, routes: [route(stable, canary)] }
  const a = await startGateway(t, patch)
  const b = await startGateway(t, patch)
  await a.gateway.store.ready()
  await b.gateway.store.ready()

  t.equal(await metric(a, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '50')
  t.equal(await metric(a, /^wegate_canary_rollbacks_total\{route="orders",upstream="canary"\} (\d+)$/m), '0', 'present at 0 before any rollback')

  // Half the traffic hits the 503 canary: far above 1 %; the tracker trips once it has 20 requests.
  const before = await hit(a, 60)
  t.ok((before['503'] ?? 0) >= 1, 'the canary failed some requests')
  t.ok(canary.received.length <= 25, `the canary stopped receiving traffic after the trip (${canary.received.length} requests)`)

  const served = canary.received.length
  const after = await hit(a, 50)
  t.same(after, { 200: 50 }, 'after the rollback everything is served by stable')
  t.equal(canary.received.length, served, 'no request reached the canary')
  t.equal(await metric(a, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '0')
  t.equal(await metric(a, /^wegate_canary_rollbacks_total\{route="orders",upstream="canary"\} (\d+)$/m), '1')
  const warn = a.logs.lines.find((l) => l.msg === 'canary rolled back: effective weight is now 0 until the config changes')
  t.match(warn, { route: 'orders', upstream: 'canary', source: 'local' })

  // Instance b never saw a failure; it learns the rollback through Redis.
  const started = Date.now()
  while (await metric(b, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m) !== '0') {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.comment(`rollback reached the other instance in ${Date.now() - started} ms`)
  const onB = await hit(b, 30)
  t.same(onB, { 200: 30 }, 'b sends nothing to the canary either')
  t.equal(canary.received.length, served)
  t.match(b.logs.lines.find((l) => l.msg === 'canary rolled back: effective weight is now 0 until the config changes'), { source: 'announced' })

  // A third instance started later (same config) picks the rollback up from Redis at start.
  const c = await startGateway(t, patch)
  await c.gateway.store.ready()
  while (await metric(c, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m) !== '0') {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.pass('a newly started instance applies the rollback in force')
})

t.test('no rollback below minRequests, at or below the error rate, or for 4xx', async (t) => {
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 500 })
  const weight = /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m
  const young = await startGateway(t, { routes: [route(stable, canary)] })
  while (canary.received.length < 10) await hit(young, 1)
  t.equal(await metric(young, weight), '50', '100 % errors but under minRequests (20): no decision yet')

  const gw = await startGateway(t, { routes: [route(stable, canary)] })
  canary.received.length = 0
  canary.setStatus(200)
  while (canary.received.length < 200) await hit(gw, 10)
  canary.setStatus(500)
  while (canary.received.length < 201) await hit(gw, 1) // one error in 201: under 1 %
  canary.setStatus(404) // 4xx is the client's problem, not the canary's
  await hit(gw, 100)
  t.equal(await metric(gw, weight), '50', 'the canary keeps its weight')
  t.ok(canary.received.length > 220, 'and its traffic')
})

t.test('a config change ends a rollback', async (t) => {
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 500 })
  const gw = await startGateway(t, { routes: [route(stable, canary)] })
  await hit(gw, 60)
  t.equal(await metric(gw, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '0')
  canary.setStatus(200)
  // The SRE fixed the canary and edits the file (new hash): the canary is back at its weight.
  const { mkdtemp, writeFile } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { stringify } = await import('yaml')
  const { baseConfig, merge } = await import('./helpers/gateway.js')
  const file = join(await mkdtemp(join(tmpdir(), 'wegate-rb-')), 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), { routes: [{ ...route(stable, canary), upstreams: [{ name: 'stable', url: stable.url, weight: 80 }, { name: 'canary', url: canary.url, weight: 20 }] }] })))
  const result = await gw.gateway.reload(file)
  t.equal(result.status, 'applied')
  t.equal(await metric(gw, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m), '20')
  const served = canary.received.length
  await hit(gw, 50)
  t.ok(canary.received.length > served, 'the canary gets traffic again')
})
