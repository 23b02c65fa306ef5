import t from 'tap'
import type { CanaryConfig } from '../src/config/schema.js'
import { createPicker, hashToUnit, type Picker } from '../src/proxy/picker.js'

const ROLLBACK = { upstream: 'canary', errorRate: 0.01, window: 60_000, minRequests: 100 }

function canary (extra: Partial<CanaryConfig> = {}): CanaryConfig {
  return { sticky: 'openid', openids: [], ...extra }
}

function twoWay (canaryWeight: number, extra: Partial<CanaryConfig> = {}): Picker {
  return createPicker([
    { name: 'stable', weight: 100 - canaryWeight },
    { name: 'canary', weight: canaryWeight }
  ], canary(extra))
}

const openids = (n: number): string[] => Array.from({ length: n }, (_, i) => `o${i.toString(36)}Xy${i}`)

function counts (p: Picker, keys: string[]): number[] {
  const c = p.names.map(() => 0)
  for (const openid of keys) c[p.pick({ openid, ip: '10.0.0.1' })]++
  return c
}

t.test('sticky none: an exact split over a fixed sequence of randoms', async (t) => {
  const p = twoWay(5, { sticky: 'none' })
  const c = [0, 0]
  for (let i = 0; i < 10_000; i++) c[p.pick({ ip: '10.0.0.1', random: (i + 0.5) / 10_000 })]++
  t.same(c, [9_500, 500])
})

t.test('sticky openid: 100k callers land within 1 % of the weights', async (t) => {
  for (const w of [1, 5, 20, 50, 90]) {
    const c = counts(twoWay(w), openids(100_000))
    t.ok(Math.abs(c[1] / 100_000 - w / 100) < 0.01, `canary at ${w} %: got ${(c[1] / 1000).toFixed(2)} %`)
  }
})

t.test('the same caller gets the same upstream, across calls and picker instances', async (t) => {
  const a = twoWay(30)
  const b = twoWay(30)
  let movedBetweenCalls = 0
  let movedBetweenInstances = 0
  for (const openid of openids(2_000)) {
    const first = a.pick({ openid, ip: '1.1.1.1' })
    if (a.pick({ openid, ip: '2.2.2.2' }) !== first) movedBetweenCalls++
    if (b.pick({ openid, ip: '3.3.3.3' }) !== first) movedBetweenInstances++
  }
  t.equal(movedBetweenCalls, 0, 'same picker, same answer')
  t.equal(movedBetweenInstances, 0, 'another picker built from the same config, same answer')
  // The hash is part of the contract: changing it would reshuffle every
  // caller at deploy time, so pin a few values.
  t.same(['oTester1', '', '10.0.0.1'].map((k) => hashToUnit(k).toFixed(6)), ['0.765901', '0.668922', '0.682564'])
})

t.test('consistent ramp: callers on the canary stay on it as its share grows', async (t) => {
  const keys = openids(20_000)
  const onCanary = (w: number) => new Set(keys.filter((openid) => twoWay(w).pick({ openid, ip: 'x' }) === 1))
  const at0 = onCanary(0)
  const at5 = onCanary(5)
  const at20 = onCanary(20)
  const at100 = onCanary(100)
  t.equal(at0.size, 0, 'nobody at 0 %')
  t.ok(at5.size > 0 && at5.size < at20.size)
  t.equal([...at5].filter((k) => !at20.has(k)).length, 0, 'everyone on canary at 5 % is on it at 20 %')
  t.equal(at100.size, keys.length, 'everyone at 100 %')
  // And the other way: shrinking 20 → 5 % only moves callers off the canary.
  const stableAt20 = keys.filter((k) => !at20.has(k))
  t.equal(stableAt20.filter((k) => at5.has(k)).length, 0, 'nobody moves onto the canary when it shrinks')
})

t.test('the ramp holds whatever the weights sum to', async (t) => {
  // 5/100 and 1/20 are the same share, so the same callers.
  const a = createPicker([{ name: 'stable', weight: 95 }, { name: 'canary', weight: 5 }], canary())
  const b = createPicker([{ name: 'stable', weight: 19 }, { name: 'canary', weight: 1 }], canary())
  for (const openid of openids(5_000)) {
    if (a.pick({ openid, ip: 'x' }) !== b.pick({ openid, ip: 'x' })) t.fail(`${openid} differs`)
  }
  t.pass('same share, same callers')
})

t.test('header override: names an upstream, even one with weight 0', async (t) => {
  const p = createPicker([
    { name: 'stable', weight: 100 },
    { name: 'canary', weight: 0 },
    { name: 'next', weight: 0 }
  ], canary({ header: 'X-Canary', openids: ['oTester'] }))
  t.equal(p.headerName, 'x-canary')
  t.equal(p.pick({ ip: 'x', headerValue: 'canary' }), 1)
  t.equal(p.pick({ ip: 'x', headerValue: 'next' }), 2)
  t.equal(p.pick({ ip: 'x', openid: 'oTester', headerValue: 'stable' }), 0, 'the header beats the openid list')
  t.equal(p.pick({ ip: 'x', headerValue: 'nope' }), 0, 'an unknown name is ignored')
  t.equal(p.pick({ ip: 'x', headerValue: 'Canary' }), 0, 'names are case-sensitive')
  t.equal(p.pick({ ip: 'x', headerValue: '' }), 0)
})

t.test('header value is ignored when the route configures no header', async (t) => {
  const p = createPicker([{ name: 'stable', weight: 1 }, { name: 'canary', weight: 0 }], canary())
  t.equal(p.headerName, undefined)
  t.equal(p.pick({ ip: 'x', headerValue: 'canary' }), 0)
})

t.test('openids override goes to the canary upstream', async (t) => {
  const ups = [{ name: 'a', weight: 100 }, { name: 'b', weight: 0 }, { name: 'c', weight: 0 }]
  const via = (c: Partial<CanaryConfig>) => createPicker(ups, canary({ openids: ['oTester'], ...c }))
  t.equal(via({ upstream: 'b' }).pick({ ip: 'x', openid: 'oTester' }), 1, 'canary.upstream')
  t.equal(via({ rollback: { ...ROLLBACK, upstream: 'b' } }).pick({ ip: 'x', openid: 'oTester' }), 1, 'else rollback.upstream')
  t.equal(via({ upstream: 'a', rollback: { ...ROLLBACK, upstream: 'b' } }).pick({ ip: 'x', openid: 'oTester' }), 0, 'canary.upstream first')
  t.equal(via({}).pick({ ip: 'x', openid: 'oTester' }), 2, 'else the last upstream')
  t.equal(via({}).pick({ ip: 'x', openid: 'oOther' }), 0, 'other callers: weights')
  t.equal(via({}).pick({ ip: 'oTester' }), 0, 'an anonymous caller never matches the list')
})

t.test('sticky openid keys on openid; anonymous callers fall back to ip', async (t) => {
  const p = twoWay(50)
  const keys = openids(200)
  for (const openid of keys) {
    const expected = p.pick({ openid, ip: '0.0.0.0' })
    if (keys.some((_, i) => p.pick({ openid, ip: `10.0.0.${i % 250}` }) !== expected)) t.fail(`${openid} moved with its ip`)
  }
  const byIp = (ip: string) => p.pick({ ip })
  t.equal(byIp('10.1.2.3'), p.pick({ ip: '10.1.2.3', openid: undefined }))
  const anonymous = counts2(p, (i) => ({ ip: `10.0.${i >> 8}.${i & 255}` }))
  t.ok(anonymous[0] > 0 && anonymous[1] > 0, 'anonymous callers still spread by ip')
  t.equal(p.pick({ ip: '10.9.9.9' }), p.pick({ ip: '10.9.9.9' }), 'same ip, same upstream')
})

t.test('sticky ip keys on ip whoever the caller is', async (t) => {
  const p = twoWay(50, { sticky: 'ip' })
  for (let i = 0; i < 200; i++) {
    const ip = `192.168.${i}.7`
    const expected = p.pick({ ip })
    if (openids(50).some((openid) => p.pick({ ip, openid }) !== expected)) t.fail(`${ip} moved with openid`)
  }
  const c = counts2(p, (i) => ({ ip: `10.0.${i >> 8}.${i & 255}`, openid: 'same-user' }))
  t.ok(Math.abs(c[1] / 20_000 - 0.5) < 0.02, 'one user on many ips spreads over both')
})

t.test('sticky none draws a fresh number per request', async (t) => {
  const p = twoWay(50, { sticky: 'none' })
  t.equal(p.pick({ ip: 'x', openid: 'o', random: 0.2 }), 1)
  t.equal(p.pick({ ip: 'x', openid: 'o', random: 0.7 }), 0)
  const c = counts2(p, () => ({ ip: 'x', openid: 'o' }))
  t.ok(c[0] > 0 && c[1] > 0, 'Math.random by default spreads one caller over both')
})

t.test('no canary block: plain weighted choice', async (t) => {
  const p = createPicker([{ name: 'a', weight: 3 }, { name: 'b', weight: 1 }], undefined)
  t.equal(p.headerName, undefined)
  const c = [0, 0]
  for (let i = 0; i < 400; i++) c[p.pick({ ip: 'x', random: (i + 0.5) / 400 })]++
  t.same(c, [300, 100])
})

t.test('three upstreams: shares hold and the canary ramp is kept', async (t) => {
  const make = (w: number) => createPicker([
    { name: 'stable', weight: 60 },
    { name: 'canary', weight: w },
    { name: 'blue', weight: 40 }
  ], canary({ upstream: 'canary' }))
  t.equal(make(10).canaryIndex, 1)
  const keys = openids(100_000)
  const c = counts(make(25), keys)
  const share = (i: number) => c[i] / keys.length
  t.ok(Math.abs(share(1) - 0.2) < 0.01, `canary 25/125: ${share(1)}`)
  t.ok(Math.abs(share(0) - 0.48) < 0.01, `stable 60/125: ${share(0)}`)
  t.ok(Math.abs(share(2) - 0.32) < 0.01, `blue 40/125: ${share(2)}`)
  // Exact split with injected randoms: [canary 25 | stable 60 | blue 40] of 125.
  const none = createPicker(make(25).names.map((name, i) => ({ name, weight: [60, 25, 40][i] })), canary({ sticky: 'none' }))
  const exact = [0, 0, 0]
  for (let i = 0; i < 125; i++) exact[none.pick({ ip: 'x', random: (i + 0.5) / 125 })]++
  t.same(exact, [60, 25, 40])
  const small = keys.slice(0, 10_000)
  const on = (w: number) => small.filter((openid) => make(w).pick({ openid, ip: 'x' }) === 1)
  const at10 = on(10)
  const at50 = new Set(on(50))
  t.equal(at10.filter((k) => !at50.has(k)).length, 0, 'canary callers at 10 stay at 50')
})

t.test('effective weights: rollback moves traffic, openids follow it, the header still forces', async (t) => {
  const p = twoWay(20, { header: 'X-Canary', openids: ['oTester'], rollback: ROLLBACK })
  t.same(p.rolledBack, [false, false])
  const back = p.withRolledBack(1)
  t.same(back.weights, [80, 0])
  t.same(back.configuredWeights, [80, 20])
  t.same(back.rolledBack, [false, true])
  t.same(counts(back, openids(1_000)), [1_000, 0], 'nobody reaches a rolled-back canary by weight')
  t.equal(back.pick({ ip: 'x', openid: 'oTester' }), 0, 'listed openids stop going to a rolled-back canary')
  t.equal(back.pick({ ip: 'x', headerValue: 'canary' }), 1, 'the header still forces it (testers debugging)')
  t.same(p.weights, [80, 20], 'the original picker is unchanged')
  t.same(p.withWeights([1, 3]).weights, [1, 3])
  t.throws(() => p.withWeights([1]))
  t.throws(() => p.withRolledBack(2))
})

t.test('a canary with weight 0 is a dark launch, not a rollback', async (t) => {
  const p = twoWay(0, { openids: ['oTester'] })
  t.same(p.rolledBack, [false, false])
  t.equal(p.pick({ ip: 'x', openid: 'oTester' }), 1)
  t.equal(p.pick({ ip: 'x', openid: 'oOther' }), 0)
})

t.test('every effective weight 0: fall back to the upstreams not rolled back', async (t) => {
  // Full cut-over to the canary, stable kept at weight 0: rolling the canary
  // back sends everyone to stable.
  const cut = twoWay(100, { rollback: ROLLBACK }).withRolledBack(1)
  t.same(cut.weights, [1, 0])
  t.same(counts(cut, openids(500)), [500, 0])
  // Two standbys share evenly.
  const three = createPicker([
    { name: 'a', weight: 0 }, { name: 'b', weight: 0 }, { name: 'canary', weight: 10 }
  ], canary({ sticky: 'none' })).withRolledBack(2)
  t.same(three.weights, [1, 1, 0])
  // Everything rolled back: serving beats refusing, configured weights apply.
  const all = createPicker([{ name: 'a', weight: 30 }, { name: 'b', weight: 70 }], canary({ sticky: 'none' }))
    .withRolledBack(0).withRolledBack(1)
  t.same(all.weights, [30, 70])
  t.same(all.rolledBack, [true, true])
  t.equal(all.pick({ ip: 'x', random: 0.1 }), 1, 'canary (last) range first')
  t.equal(all.pick({ ip: 'x', random: 0.9 }), 0)
})

t.test('a single upstream always wins', async (t) => {
  const p = createPicker([{ name: 'only', weight: 1 }], canary({ header: 'X-Canary' }))
  t.equal(p.pick({ ip: 'x', headerValue: 'other' }), 0)
  t.equal(p.withRolledBack(0).pick({ ip: 'x' }), 0)
})

function counts2 (p: Picker, input: (i: number) => { ip: string, openid?: string }): number[] {
  const c = p.names.map(() => 0)
  for (let i = 0; i < 20_000; i++) c[p.pick(input(i))]++
  return c
}
