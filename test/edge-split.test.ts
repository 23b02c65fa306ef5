/**
 * End to end grey release: many callers split close to the weights, one caller
 * always lands on one upstream, raising the canary's share only adds callers to
 * it (nobody flips back), and testers can force a version.
 */
import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'
import { startEcho } from './helpers/upstream.js'

const stable = await startEcho(t, 'stable')
const canary = await startEcho(t, 'canary')

function route (canaryWeight: number, extra: Record<string, unknown> = {}) {
  return {
    name: 'orders',
    prefix: '/api/orders',
    auth: 'required',
    upstreams: [
      { name: 'stable', url: stable.url, weight: 100 - canaryWeight },
      { name: 'canary', url: canary.url, weight: canaryWeight }
    ],
    canary: { sticky: 'openid', header: 'X-Canary', openids: ['oTester1'], ...extra }
  }
}

const at5 = await startGateway(t, { routes: [route(5)] })
const at20 = await startGateway(t, { routes: [route(20)] })

const APP = 'wx00000000000demo0'
const N = 2000
const openids = Array.from({ length: N }, (_, i) => `oUser${i.toString(36)}x${(i * 7919).toString(16)}`)

/** Which upstream served each openid through this gateway (16 requests in flight). */
async function servedBy (gw: { url: string, gateway: typeof at5.gateway }, ids: string[], headers: Record<string, string> = {}): Promise<Map<string, string>> {
  const tokens = gw.gateway.snapshot().tokens
  const out = new Map<string, string>()
  let next = 0
  const worker = async () => {
    while (next < ids.length) {
      const openid = ids[next++]
      const token = tokens.signAccess({ openid, appid: APP, fid: `f-${openid}` }).token
      const res = await request(`${gw.url}/api/orders/list`, { headers: { authorization: `Bearer ${token}`, ...headers } })
      await res.body.dump()
      if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`)
      out.set(openid, String(res.headers['x-upstream']))
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
  return out
}

const share = (m: Map<string, string>) => [...m.values()].filter((u) => u === 'canary').length / m.size

const on5 = await servedBy(at5, openids)
const on20 = await servedBy(at20, openids)

t.test('the weighted split over 2000 callers is close to the weights', async (t) => {
  const s5 = share(on5)
  const s20 = share(on20)
  // Binomial sd at n=2000: ~0.5 % at 5 %, ~0.9 % at 20 %; allow ~4 sd.
  t.ok(Math.abs(s5 - 0.05) < 0.02, `canary share at weight 5: ${(s5 * 100).toFixed(1)} %`)
  t.ok(Math.abs(s20 - 0.20) < 0.035, `canary share at weight 20: ${(s20 * 100).toFixed(1)} %`)
})

t.test('consistent ramp: every caller on the canary at 5 % is still on it at 20 %', async (t) => {
  const flipped = openids.filter((id) => on5.get(id) === 'canary' && on20.get(id) !== 'canary')
  t.same(flipped, [], 'nobody leaves the canary when its share grows')
  t.ok([...on5.values()].includes('canary'), 'some callers were on the canary at 5 %')
})

t.test('stickiness: the same caller 20 times lands on one upstream', async (t) => {
  const sample = [openids[0], openids[1], ...openids.filter((id) => on20.get(id) === 'canary').slice(0, 2)]
  for (const id of sample) {
    const seen = new Set<string>()
    for (let i = 0; i < 20; i++) seen.add((await servedBy(at20, [id])).get(id) ?? '')
    t.equal(seen.size, 1, `${id} always on ${[...seen].join(',')}`)
    t.equal([...seen][0], on20.get(id), 'the same upstream as in the split run')
  }
})

t.test('tester overrides: the X-Canary header and the openid list force a version', async (t) => {
  const stableCaller = openids.find((id) => on5.get(id) === 'stable') ?? ''
  t.equal((await servedBy(at5, [stableCaller], { 'x-canary': 'canary' })).get(stableCaller), 'canary', 'header names the canary')
  const canaryCaller = openids.find((id) => on5.get(id) === 'canary') ?? ''
  t.equal((await servedBy(at5, [canaryCaller], { 'x-canary': 'stable' })).get(canaryCaller), 'stable', 'header names stable')
  t.equal((await servedBy(at5, [stableCaller], { 'x-canary': 'no-such-version' })).get(stableCaller), 'stable', 'an unknown name is ignored')
  t.equal((await servedBy(at5, ['oTester1'])).get('oTester1'), 'canary', 'a listed tester openid is always on the canary')
})

t.test('a weight-0 canary gets nobody but testers', async (t) => {
  const off = await startGateway(t, { routes: [route(0)] })
  const served = await servedBy(off, openids.slice(0, 200))
  t.equal(share(served), 0)
  t.equal((await servedBy(off, ['oTester1'])).get('oTester1'), 'canary')
})

t.test('the access log line records which upstream served each request', async (t) => {
  const access = at20.logs.lines.filter((l) => l.msg === 'access' && l.route === 'orders')
  t.ok(access.length >= N)
  const counts = { stable: 0, canary: 0 }
  for (const l of access) if (l.upstream === 'stable' || l.upstream === 'canary') counts[l.upstream]++
  t.equal(counts.stable + counts.canary, access.length, 'every line names stable or canary')
  t.ok(counts.canary > 0 && counts.stable > 0)
  t.notMatch(at20.logs.text(), /Bearer|eyJ/, 'no tokens in the log')
})
