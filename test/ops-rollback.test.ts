/**
 * Automatic canary rollback: a failing canary is taken out of rotation on the
 * instance that saw it fail and, through Redis, on every other instance.
 */
import t from 'tap'
import { request } from 'undici'
import { startGateway, type StartedGateway } from './helpers/gateway.js'
import { startRedis } from './helpers/redis.js'
import { startUpstream, type TestUpstream } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

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
  await waitUntil(async () => await metric(b, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m) === '0', 10_000)
  t.comment(`rollback reached the other instance in ${Date.now() - started} ms`)
  const onB = await hit(b, 30)
  t.same(onB, { 200: 30 }, 'b sends nothing to the canary either')
  t.equal(canary.received.length, served)
  t.match(b.logs.lines.find((l) => l.msg === 'canary rolled back: effective weight is now 0 until the config changes'), { source: 'announced' })

  // A third instance started later (same config) picks the rollback up from Redis at start.
  const c = await startGateway(t, patch)
  await c.gateway.store.ready()
  await waitUntil(async () => await metric(c, /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m) === '0', 10_000)
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

const canaryWeight = /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m

/** Poll an instance's effective canary weight until it is `want` (fails after 10 s). */
async function weightBecomes (gw: StartedGateway, want: string): Promise<void> {
  await waitUntil(async () => await metric(gw, canaryWeight) === want, 10_000)
}

/** Send traffic until the canary is rolled back (minRequests 20 canary requests in the window). */
async function tripOn (gw: StartedGateway): Promise<void> {
  while (await metric(gw, canaryWeight) !== '0') await hit(gw, 10)
}

/** Wait until `gw`'s store has seen the activation `from` announced at its last reload. */
async function seesActivationOf (gw: StartedGateway, from: StartedGateway): Promise<void> {
  const line = from.logs.lines.findLast((l) => l.msg === 'config reloaded')
  const marker = `${from.gateway.snapshot().hash}@${String(line?.activation)}`
  await waitUntil(() => gw.gateway.store.rollbacks().has(marker), 10_000)
}

/** Config files for A (the text startGateway builds from the same patch, so the same hash) and B. */
async function configFiles (patchA: Record<string, unknown>, patchB: Record<string, unknown>) {
  const { mkdtemp, writeFile } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { stringify } = await import('yaml')
  const { baseConfig, merge } = await import('./helpers/gateway.js')
  const dir = await mkdtemp(join(tmpdir(), 'wegate-revert-'))
  const a = join(dir, 'a.yaml')
  const b = join(dir, 'b.yaml')
  await writeFile(a, stringify(merge(baseConfig(), patchA)))
  await writeFile(b, stringify(merge(baseConfig(), patchB)))
  return { a, b }
}

t.test('regression: reverting to an earlier config (A → B → A) re-applied A\'s old rollback', async (t) => {
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 500 })
  const patchA = { routes: [route(stable, canary)] }
  const patchB = { routes: [{ ...route(stable, canary), upstreams: [{ name: 'stable', url: stable.url, weight: 80 }, { name: 'canary', url: canary.url, weight: 20 }] }] }
  const files = await configFiles(patchA, patchB)
  const gw = await startGateway(t, patchA)
  await tripOn(gw)
  t.equal(await metric(gw, canaryWeight), '0', 'A rolled back')
  t.equal((await gw.gateway.reload(files.a)).status, 'unchanged', 'the same bytes are no change…')
  t.equal(await metric(gw, canaryWeight), '0', '…and keep the rollback')

  t.equal((await gw.gateway.reload(files.b)).status, 'applied')
  t.equal(await metric(gw, canaryWeight), '20', 'B: its configured weight')
  t.equal((await gw.gateway.reload(files.a)).status, 'applied')
  t.equal(await metric(gw, canaryWeight), '50', 'back on A: A\'s configured weight, not its old rollback')
  const served = canary.received.length
  await hit(gw, 10)
  t.ok(canary.received.length > served, 'the canary gets traffic again (until it fails its window anew)')
})

t.test('rollbacks and reloads across instances on one Redis: a later reload joins the change, a revert starts afresh', async (t) => {
  const redis = await startRedis()
  t.teardown(redis.stop)
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 503 })
  const store = { type: 'redis', url: redis.url }
  const patchA = { store, routes: [route(stable, canary)] }
  const patchB = { store, routes: [{ ...route(stable, canary), upstreams: [{ name: 'stable', url: stable.url, weight: 70 }, { name: 'canary', url: canary.url, weight: 30 }] }] }
  const files = await configFiles(patchA, patchB)
  const [a, b, c] = [await startGateway(t, patchA), await startGateway(t, patchA), await startGateway(t, patchA)]
  for (const gw of [a, b, c]) await gw.gateway.store.ready()

  await tripOn(a)
  for (const gw of [a, b, c]) await weightBecomes(gw, '0')
  t.pass('A rolled back on a, announced to b and c')

  // a applies B first and its canary fails there too; b applies B a moment later.
  t.equal((await a.gateway.reload(files.b)).status, 'applied')
  t.equal(await metric(a, canaryWeight), '30')
  await tripOn(a)
  t.equal(await metric(b, canaryWeight), '0', 'b, still on A, keeps A\'s rollback')
  await seesActivationOf(b, a)
  t.equal((await b.gateway.reload(files.b)).status, 'applied')
  await weightBecomes(b, '0')
  t.pass('b joined the change a made: B\'s rollback is in force on b')

  // The SRE reverts to A. a applies it; c never saw B.
  t.equal((await a.gateway.reload(files.a)).status, 'applied')
  t.equal(await metric(a, canaryWeight), '50', 'a: A at its configured weight, not A\'s old rollback')
  await weightBecomes(c, '50')
  t.pass('c (on A all along) follows the re-applied A: its old rollback ended')
  t.equal(await metric(b, canaryWeight), '0', 'b, still on B, keeps B\'s rollback until it reloads')
  await seesActivationOf(b, a)
  t.equal((await b.gateway.reload(files.a)).status, 'applied')
  t.equal(await metric(b, canaryWeight), '50', 'b joins the revert')
  const d = await startGateway(t, patchA)
  await d.gateway.store.ready()
  const joined = (l: Record<string, unknown>) => l.msg === 'joined the config activation' || String(l.msg).startsWith('config re-applied elsewhere')
  await waitUntil(() => d.logs.lines.some(joined), 10_000)
  t.equal(await metric(d, canaryWeight), '50', 'an instance started now joins the current activation of A')
  t.equal(await metric(d, /^wegate_canary_rollbacks_total\{route="orders",upstream="canary"\} (\d+)$/m), '0', 'without applying A\'s old rollback on the way')

  // A fails again: the new rollback reaches every instance on A, the one started last included.
  await tripOn(a)
  for (const gw of [a, b, c, d]) await weightBecomes(gw, '0')
  t.pass('a rollback in the new activation is shared as before')
})
