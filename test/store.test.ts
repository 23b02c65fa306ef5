// One behavioural suite, run against the memory store and real Redis in each topology:
// a single redis-server, a 3-master Redis Cluster, and a master + replica behind Sentinel.
import t, { type Test as Tap } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createHash, randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { createStore } from '../src/store/index.js'
import type { RefreshRecord, RotateInput, Store, StoreLogger } from '../src/store/types.js'
import type { StoreConfig } from '../src/config/schema.js'
import { GatewayError } from '../src/errors.js'
import { startCluster, startRedis, startSentinel, type TestTopology } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'

const silent: StoreLogger = { info () {}, warn () {}, error () {} }
const MIN = 60_000
const h = (s: string) => createHash('sha256').update(s).digest('hex')
const id = () => randomBytes(8).toString('hex')
/** The iat (ms, whole second) of a token issued now: after the store started, so no loss cutoff applies. */
const issuedNow = () => Math.floor(Date.now() / 1000) * 1000

/** A frozen clock the test moves by hand (starts at real time so Redis key TTLs stay sensible). */
function clock () {
  let t = Date.now()
  return { now: () => t, advance (ms: number) { t += ms } }
}

function record (now: number, over: Partial<RefreshRecord> = {}): RefreshRecord {
  return {
    fid: id(), openid: 'o-' + id(), unionid: 'u-1', appid: 'wxapp', expiresAt: now + 7 * MIN, familyExpiresAt: now + 30 * MIN, createdAt: now, ...over
  }
}

function rotation (rec: RefreshRecord, hash: string, nextHash: string, nowMs: number, over: Partial<RotateInput> = {}): RotateInput {
  return { fid: rec.fid, hash, nextHash, grace: 'payload-of-' + nextHash, nowMs, refreshTtlMs: 7 * MIN, graceMs: 10_000, appids: ['wxapp', 'wxother'], ...over }
}

type Make = (t: Tap, cfg?: Partial<StoreConfig>, now?: () => number) => Promise<Store>

let prefixes = 0
function suite (name: string, make: Make, topo?: TestTopology) {
  t.test(name, async (t) => {
    t.test('session_key is overwritten at each login and expires', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      await s.setSessionKey('wxapp', 'o1', 'sk-first', MIN)
      await s.setSessionKey('wxapp', 'o1', 'sk-second', MIN)
      t.equal(await s.getSessionKey('wxapp', 'o1'), 'sk-second')
      t.equal(await s.getSessionKey('wxapp', 'o2'), null, 'another user has none')
      t.equal(await s.getSessionKey('wxother', 'o1'), null, 'keyed per app too')
      await s.setSessionKey('wxapp', 'o3', 'sk-short', 50)
      c.advance(100)
      await sleep(120) // Redis expires in real time
      t.equal(await s.getSessionKey('wxapp', 'o3'), null, 'gone after its TTL')
    })

    t.test('web logins: a single-use entry is taken once, by one of concurrent takers, and expires; grants per user', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      await s.putOnce('state', 'a', 'v-a', MIN)
      t.equal(await s.takeOnce('state', 'a'), 'v-a')
      t.equal(await s.takeOnce('state', 'a'), null, 'taken: gone')
      await s.putOnce('ticket', 'b', 'v-b', MIN)
      const racing = await Promise.all(Array.from({ length: 8 }, () => s.takeOnce('ticket', 'b')))
      t.same(racing.filter((v) => v !== null), ['v-b'], 'one taker of eight gets it')
      await s.putOnce('state', 'k', 'a state', MIN)
      await s.putOnce('ticket', 'k', 'a ticket', MIN)
      t.equal(await s.takeOnce('ticket', 'k'), 'a ticket', 'the kinds are apart: one key, two entries')
      t.equal(await s.takeOnce('state', 'k'), 'a state')
      await s.putOnce('state', 'short', 'v', 50)
      await s.putOnce('ticket', 'short', 'v', 50)
      c.advance(100)
      await sleep(120) // Redis expires in real time
      t.equal(await s.takeOnce('state', 'short'), null, 'gone after its TTL')
      t.equal(await s.takeOnce('ticket', 'short'), null, 'a ticket too')
      await s.setWeChatGrant('wxweb', 'o1', 'g1', MIN)
      await s.setWeChatGrant('wxweb', 'o1', 'g2', MIN)
      t.equal(await s.getWeChatGrant('wxweb', 'o1'), 'g2', 'overwritten at each login')
      t.equal(await s.getWeChatGrant('wxother', 'o1'), null, 'keyed per app')
    })

    t.test('rollouts: a versioned record (compare-and-set), a decision lease, per-instance window reports', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const route = 'orders-' + id()
      t.equal(await s.getRollout(route), null, 'none yet')
      t.equal(await s.putRollout(route, 1, 'x', MIN), false, 'no record: only expected 0 writes')
      t.equal(await s.putRollout(route, 0, 'step 0', MIN), true)
      t.same(await s.getRollout(route), { version: 1, value: 'step 0' })
      const racing = await Promise.all([s.putRollout(route, 1, 'advanced', MIN), s.putRollout(route, 1, 'paused', MIN)])
      t.same(racing.filter(Boolean).length, 1, 'two writers on one version: one wins')
      const after = await s.getRollout(route)
      t.equal(after?.version, 2)
      t.ok(after?.value === 'advanced' || after?.value === 'paused')
      t.equal(await s.leaseRollout(route, 'i1', 50), true, 'free lease taken')
      t.equal(await s.leaseRollout(route, 'i2', 50), false, 'held by another')
      t.equal(await s.leaseRollout(route, 'i1', 50), true, 'renewed by its holder')
      await s.reportRollout(route, 'w1', 'i1', 'a1', MIN)
      await s.reportRollout(route, 'w1', 'i2', 'b1', MIN)
      await s.reportRollout(route, 'w1', 'i1', 'a2', MIN)
      await s.reportRollout(route, 'w2', 'i1', 'other window', MIN)
      t.same((await s.rolloutReports(route, 'w1')).sort(), ['a2', 'b1'], "each instance's latest report")
      t.same(await s.rolloutReports(route, 'w0'), [])
      c.advance(100)
      await sleep(120) // Redis expires in real time
      t.equal(await s.leaseRollout(route, 'i2', 50), true, 'an expired lease goes to whoever asks')
    })

    t.test('rotation spends the token and mints a child of the same family', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('t0'), rec)
      const r1 = await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now()))
      t.equal(r1.status, 'rotated')
      if (r1.status !== 'rotated') return
      t.match(r1.record, { fid: rec.fid, openid: rec.openid, unionid: 'u-1', appid: 'wxapp', familyExpiresAt: rec.familyExpiresAt, createdAt: rec.createdAt })
      t.equal(r1.record.expiresAt, c.now() + 7 * MIN, 'child lives refreshTtl')
      c.advance(1000)
      const r2 = await s.rotateRefresh(rotation(rec, h('t1'), h('t2'), c.now()))
      t.equal(r2.status, 'rotated', 'the child rotates in turn')
      t.same(await s.rotateRefresh(rotation(rec, h('nope'), h('x'), c.now())), { status: 'invalid' }, 'unknown token')
      t.same(await s.rotateRefresh({ ...rotation(rec, h('t2'), h('x'), c.now()), fid: 'other' }), { status: 'invalid' }, 'unknown family')
      const noUnion = record(c.now(), { unionid: undefined })
      await s.createFamily(h('n0'), noUnion)
      const r3 = await s.rotateRefresh(rotation(noUnion, h('n0'), h('n1'), c.now()))
      t.ok(r3.status === 'rotated' && !('unionid' in r3.record), 'no unionid stays absent')
    })

    t.test('reuse after the grace window revokes the whole family, latest child included', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('t0'), rec)
      t.equal((await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now()))).status, 'rotated')
      t.equal((await s.rotateRefresh(rotation(rec, h('t1'), h('t2'), c.now()))).status, 'rotated')
      c.advance(11_000) // past the 10 s grace
      t.same(await s.rotateRefresh(rotation(rec, h('t0'), h('a'), c.now())), { status: 'reused', fid: rec.fid })
      t.same(await s.rotateRefresh(rotation(rec, h('t2'), h('b'), c.now())), { status: 'revoked' }, 'the live child is dead too')
      // denying the family's access tokens is the sessions service's step (test/auth-sessions.test.ts)
    })

    t.test('a retry within the grace window gets the same child', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('t0'), rec)
      const first = await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now()))
      c.advance(3000)
      const retry = await s.rotateRefresh(rotation(rec, h('t0'), h('t1-other'), c.now()))
      t.equal(retry.status, 'grace')
      if (retry.status !== 'grace' || first.status !== 'rotated') return
      t.equal(retry.grace, 'payload-of-' + h('t1'), 'payload stored by the first rotation')
      t.same(retry.record, first.record, 'same child record')
      t.equal((await s.rotateRefresh(rotation(rec, h('t1'), h('t2'), c.now()))).status, 'rotated', 'the child is live')
      t.equal((await s.rotateRefresh(rotation(rec, h('t1-other'), h('t3'), c.now()))).status, 'invalid', 'the retry minted nothing')
    })

    t.test('regression: within the grace window, a spent token whose child is spent too is reuse', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('r1'), rec)
      t.equal((await s.rotateRefresh(rotation(rec, h('r1'), h('r2'), c.now()))).status, 'rotated')
      c.advance(100)
      t.equal((await s.rotateRefresh(rotation(rec, h('r2'), h('r3'), c.now()))).status, 'rotated')
      c.advance(100) // both well inside the 10 s grace
      t.same(await s.rotateRefresh(rotation(rec, h('r1'), h('x'), c.now())), { status: 'reused', fid: rec.fid },
        'R1 replayed after its child R2 was spent: not a retry')
      t.same(await s.rotateRefresh(rotation(rec, h('r2'), h('y'), c.now())), { status: 'revoked' }, 'R2 no longer hands out R3')
      t.same(await s.rotateRefresh(rotation(rec, h('r3'), h('z'), c.now())), { status: 'revoked' }, 'the live R3 is dead')

      const other = record(c.now())
      await s.createFamily(h('o1'), other)
      await s.rotateRefresh(rotation(other, h('o1'), h('o2'), c.now()))
      await s.rotateRefresh(rotation(other, h('o2'), h('o3'), c.now()))
      t.equal((await s.rotateRefresh(rotation(other, h('o2'), h('o4'), c.now()))).status, 'grace', 'R2 retried while R3 is live: still a retry')
      t.same(await s.rotateRefresh(rotation(other, h('o1'), h('o5'), c.now())), { status: 'reused', fid: other.fid }, 'R1 is not')
    })

    t.test('a family of an app this gateway does not serve is refused, its token not spent', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now(), { appid: 'wxgone' })
      await s.createFamily(h('g0'), rec)
      t.same(await s.rotateRefresh(rotation(rec, h('g0'), h('g1'), c.now())), { status: 'foreign', appid: 'wxgone' })
      t.equal((await s.rotateRefresh(rotation(rec, h('g0'), h('g1'), c.now(), { appids: ['wxgone'] }))).status, 'rotated',
        'a gateway that serves the app rotates it: it was never spent')
    })

    t.test('familyToken: the live token or a spent one is held; anything else is not', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('k0'), rec)
      await s.rotateRefresh(rotation(rec, h('k0'), h('k1'), c.now()))
      t.equal(await s.familyToken(rec.fid, h('k1'), c.now()), 'current')
      t.equal(await s.familyToken(rec.fid, h('k0'), c.now()), 'spent')
      t.equal(await s.familyToken(rec.fid, h('made-up'), c.now()), 'none')
      t.equal(await s.familyToken('no-such-family', h('k1'), c.now()), 'none')
      t.equal((await s.rotateRefresh(rotation(rec, h('k1'), h('k2'), c.now()))).status, 'rotated', 'asking spent nothing')
      await s.revokeFamily(rec.fid, c.now() + MIN)
      t.equal(await s.familyToken(rec.fid, h('k2'), c.now()), 'none', 'a revoked family holds nothing')
    })

    t.test('10 concurrent rotations of one token: one rotated, the rest grace with the same child', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('t0'), rec)
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) =>
        s.rotateRefresh(rotation(rec, h('t0'), h('child' + i), c.now()))))
      const rotated = results.filter((r) => r.status === 'rotated')
      const grace = results.filter((r) => r.status === 'grace')
      t.equal(rotated.length, 1, 'exactly one rotation')
      t.equal(grace.length, 9, 'the rest are grace hits')
      const winner = results.findIndex((r) => r.status === 'rotated')
      t.ok(grace.every((r) => r.status === 'grace' && r.grace === 'payload-of-' + h('child' + winner)), 'all return the winner\'s child')
      t.equal((await s.rotateRefresh(rotation(rec, h('child' + winner), h('next'), c.now()))).status, 'rotated')
    })

    t.test('token and family lifetimes end in expired', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now(), { familyExpiresAt: c.now() + 5000 })
      await s.createFamily(h('t0'), rec)
      const r = await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now()))
      t.ok(r.status === 'rotated' && r.record.expiresAt === rec.familyExpiresAt, 'child capped at the family\'s absolute expiry')
      c.advance(6000)
      t.same(await s.rotateRefresh(rotation(rec, h('t1'), h('t2'), c.now())), { status: 'expired' }, 'family over')

      const short = record(c.now(), { expiresAt: c.now() + 1000 })
      await s.createFamily(h('s0'), short)
      c.advance(2000)
      t.same(await s.rotateRefresh(rotation(short, h('s0'), h('s1'), c.now())), { status: 'expired' }, 'token over')
    })

    t.test('logout revokes a family: its refresh tokens and access tokens', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const rec = record(c.now())
      await s.createFamily(h('t0'), rec)
      await s.revokeFamily(rec.fid, c.now() + 16 * MIN)
      t.same(await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now())), { status: 'revoked' })
      t.ok(s.isRevoked({ jti: 'j1', fid: rec.fid, appid: 'wxapp', openid: rec.openid, iatMs: c.now() }))
    })

    t.test('first start: every token issued before the store\'s state began is refused (a restart logs everyone out)', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const subj = { jti: 'j-' + id(), fid: 'f-' + id(), appid: 'wxapp', openid: 'o', iatMs: Math.floor(c.now() / 1000) * 1000 }
      t.notOk(s.isRevoked(subj), 'issued in the second the store started: accepted (iat has one-second resolution)')
      t.ok(s.isRevoked({ ...subj, iatMs: subj.iatMs - 1000 }), 'issued the second before: refused')
    })

    t.test('revoking one access token by jti', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const subj = { jti: 'jti-' + id(), fid: 'f', appid: 'wxapp', openid: 'o', iatMs: c.now() }
      t.notOk(s.isRevoked(subj))
      await s.revokeAccessToken(subj.jti, c.now() + 15 * MIN)
      t.ok(s.isRevoked(subj))
      t.notOk(s.isRevoked({ ...subj, jti: 'another' }), 'other tokens of the same login still work')
    })

    t.test('logout-all: older access tokens and families die, newer ones live', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const old = record(c.now(), { openid: 'o-all' })
      await s.createFamily(h('old0'), old)
      c.advance(1000)
      const cutoff = c.now()
      await s.revokeUserBefore('wxapp', 'o-all', cutoff, cutoff + 30 * MIN)
      const subj = { jti: 'j', fid: old.fid, appid: 'wxapp', openid: 'o-all', iatMs: cutoff - 1000 }
      t.ok(s.isRevoked(subj), 'token issued before the cutoff')
      t.notOk(s.isRevoked({ ...subj, fid: 'new', iatMs: cutoff + 1000 }), 'token issued after')
      t.notOk(s.isRevoked({ ...subj, fid: 'x', openid: 'someone-else' }), 'other users unaffected')
      t.notOk(s.isRevoked({ ...subj, fid: 'x', appid: 'wxother' }), 'same openid in another app unaffected')
      t.equal(s.userCutoff('wxapp', 'o-all'), cutoff, 'the cutoff, for the sessions service to end older families at their next refresh')
      t.equal(s.userCutoff('wxother', 'o-all'), 0, 'per app')
    })

    t.test('login claim: one holder per code; the others see it pending, then its outcome', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const key = h('wxapp\0code-' + id())
      t.same(await s.claimLogin(key, 'A', 10_000), { status: 'claimed' }, 'the first login claims the code')
      t.same(await s.claimLogin(key, 'B', 10_000), { status: 'pending' }, 'another login finds it claimed')
      t.same(await s.peekLogin(key), { status: 'pending' })
      t.same(await s.claimLogin(key, 'A', 10_000), { status: 'claimed' }, 'the holder may take its own claim back (a retry on its instance)')
      t.equal(await s.finishLogin(key, 'B', 'not-mine', true, 10_000), false, 'only the holder can finish it')
      t.equal(await s.finishLogin(key, 'A', 'sealed-outcome', true, 10_000), true)
      t.same(await s.peekLogin(key), { status: 'done', outcome: 'sealed-outcome' }, 'a waiter sees the outcome')
      t.same(await s.claimLogin(key, 'C', 10_000), { status: 'done', outcome: 'sealed-outcome' }, 'a later login gets the same outcome')
      t.same(await s.claimLogin(key, 'A', 10_000), { status: 'done', outcome: 'sealed-outcome' }, 'even the former holder')
      t.same(await s.peekLogin(h('never-claimed')), { status: 'none' })
    })

    t.test('login claim: a transient failure reaches the waiters, then a new login takes the claim over', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const key = h('wxapp\0busy-' + id())
      await s.claimLogin(key, 'A', 10_000)
      t.equal(await s.finishLogin(key, 'A', 'sealed-busy', false, 10_000), true)
      t.same(await s.peekLogin(key), { status: 'failed', outcome: 'sealed-busy' }, 'a login already waiting gets the failure')
      t.same(await s.claimLogin(key, 'B', 10_000), { status: 'claimed' }, 'a new login retries instead of inheriting it')
      t.same(await s.peekLogin(key), { status: 'pending' })
    })

    t.test('login claim: released or expired, the next login claims it', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const key = h('wxapp\0gone-' + id())
      await s.claimLogin(key, 'A', 10_000)
      await s.releaseLogin(key, 'B')
      t.same(await s.peekLogin(key), { status: 'pending' }, 'another login cannot release it')
      await s.releaseLogin(key, 'A')
      t.same(await s.peekLogin(key), { status: 'none' }, 'the holder can')
      t.same(await s.claimLogin(key, 'B', 50), { status: 'claimed' })
      c.advance(100)
      await sleep(120) // Redis expires in real time
      t.same(await s.peekLogin(key), { status: 'none' }, 'a claim whose holder died expires')
      t.same(await s.claimLogin(key, 'C', 10_000), { status: 'claimed' }, 'and can be claimed again')
      t.equal(await s.finishLogin(key, 'C', 'x', true, 50), true)
      c.advance(100)
      await sleep(120)
      t.same(await s.claimLogin(key, 'D', 10_000), { status: 'claimed' }, 'a remembered outcome expires too')
    })

    t.test('login claim: 10 concurrent claims of one code, exactly one holder', async (t) => {
      const c = clock()
      const s = await make(t, {}, c.now)
      const key = h('wxapp\0race-' + id())
      const all = await Promise.all(Array.from({ length: 10 }, (_, i) => s.claimLogin(key, 'owner' + i, 10_000)))
      t.equal(all.filter((r) => r.status === 'claimed').length, 1)
      t.equal(all.filter((r) => r.status === 'pending').length, 9)
    })

    if (topo !== undefined) {
      t.test('every Redis key has a TTL after a full scenario', async (t) => {
        const c = clock()
        const prefix = `ttl${++prefixes}:`
        const s = await make(t, { keyPrefix: prefix }, c.now)
        const rec = record(c.now())
        await s.setSessionKey('wxapp', rec.openid, 'sk', MIN)
        await s.createFamily(h('t0'), rec)
        await s.rotateRefresh(rotation(rec, h('t0'), h('t1'), c.now()))
        await s.rotateRefresh(rotation(rec, h('t1'), h('t2'), c.now()))
        const other = record(c.now())
        await s.createFamily(h('o0'), other)
        await s.rotateRefresh(rotation(other, h('o0'), h('o1'), c.now()))
        c.advance(11_000)
        await s.rotateRefresh(rotation(other, h('o0'), h('o2'), c.now())) // reuse
        await s.revokeFamily(rec.fid, c.now() + 16 * MIN)
        await s.revokeAccessToken('jti1', c.now() + 15 * MIN)
        await s.revokeUserBefore('wxapp', 'ox', c.now(), c.now() + 30 * MIN)
        await s.claimLogin(h('claimed-only'), 'A', 10_000)
        await s.claimLogin(h('finished'), 'A', 10_000)
        await s.finishLogin(h('finished'), 'A', 'outcome', true, 10_000)
        await s.putOnce('state', h('state'), 'v', 10 * MIN)
        await s.putOnce('ticket', h('ticket'), 'v', MIN)
        await s.setWeChatGrant('wxweb', 'o1', 'g', MIN)
        // on a cluster the keys are spread over the masters: scan each one, ask each key's own master
        const keys: string[] = []
        const ttls = new Map<string, number>()
        for (const r of await topo.masters()) {
          let cursor = '0'
          do {
            const [next, batch] = await r.scan(cursor, 'MATCH', prefix + '*', 'COUNT', 1000)
            cursor = next
            for (const k of batch) { keys.push(k); ttls.set(k, await r.pttl(k)) }
          } while (cursor !== '0')
        }
        t.ok(keys.length >= 8, `scenario wrote keys (${keys.length})`)
        for (const k of keys) t.ok((ttls.get(k) ?? -1) > 0, `TTL on ${k}`)
        const graceKeys = keys.filter((k) => k.includes(':grace:'))
        t.ok(graceKeys.length > 0, 'grace payloads were written')
        for (const k of graceKeys) t.ok((ttls.get(k) ?? Infinity) <= 10_000, `grace payload ${k} lives at most refreshGrace`)
        const loginKeys = keys.filter((k) => k.includes('{login:'))
        t.same(loginKeys.sort(), [`${prefix}{login:${h('claimed-only')}}`, `${prefix}{login:${h('finished')}}`].sort(),
          'one key per login, under its own hash tag (Redis Cluster)')
        for (const k of loginKeys) t.ok((ttls.get(k) ?? Infinity) <= 10_000, `login claim ${k} lives at most its TTL`)
      })
    } else {
      t.test('memory store: families are bounded by maxEntries, revocations only by their lifetime', async (t) => {
        const c = clock()
        const s = await make(t, { maxEntries: 100 }, c.now)
        const first = record(c.now())
        await s.createFamily(h('first'), first)
        for (let i = 0; i < 100; i++) await s.createFamily(h('f' + i), record(c.now()))
        t.same(await s.rotateRefresh(rotation(first, h('first'), h('x'), c.now())), { status: 'invalid' }, 'oldest family evicted (its user logs in again)')
        const subject = (i: number) => ({ jti: 'j' + i, fid: 'f' + i, appid: 'a', openid: 'o' + i, iatMs: c.now() - 1 })
        for (let i = 0; i < 150; i++) {
          await s.revokeAccessToken('j' + i, c.now() + MIN)
          await s.revokeFamily('f' + i, c.now() + MIN)
          await s.revokeUserBefore('a', 'o' + i, c.now(), c.now() + 2 * MIN)
        }
        for (const i of [0, 1, 99, 100, 149]) {
          t.ok(s.isRevoked({ ...subject(i), fid: 'live' }), `jti ${i} still revoked past maxEntries`)
          t.ok(s.isRevoked({ ...subject(i), jti: 'live' }), `fid ${i} still revoked`)
          t.ok(s.isRevoked({ ...subject(i), jti: 'live', fid: 'live' }), `user ${i}'s cutoff still in force`)
        }
      })

      t.test('regression: memory store: a flood of browser-login states never evicts a live ticket (each kind has its own bound)', async (t) => {
        const c = clock()
        const s = await make(t, { maxEntries: 100 }, c.now)
        await s.putOnce('ticket', 'live', 'the ticket', MIN)
        await s.putOnce('state', 'first', 'the first state', 10 * MIN)
        for (let i = 0; i < 1000; i++) await s.putOnce('state', 'flood' + i, 'x', 10 * MIN)
        t.equal(await s.takeOnce('ticket', 'live'), 'the ticket', 'the ticket survived 1000 states over a bound of 100')
        t.equal(await s.takeOnce('state', 'first'), null, 'the oldest states are evicted (those logins start again)')
        t.equal(await s.takeOnce('state', 'flood999'), 'x', 'the newest are kept')
        for (let i = 0; i < 101; i++) await s.putOnce('ticket', 't' + i, 'x', MIN)
        t.equal(await s.takeOnce('ticket', 't0'), null, 'tickets are bounded too')
        t.equal(await s.takeOnce('ticket', 't100'), 'x')
      })
    }
  })
}

const memoryConfig = (over: Partial<StoreConfig> = {}): StoreConfig =>
  ({ type: 'memory', url: '', keyPrefix: 'wegate:', failMode: 'closed', maxEntries: 100_000, ...over })

suite('memory store', async (t, cfg = {}, now) => {
  const s = createStore(memoryConfig(cfg), silent, { now })
  t.teardown(() => s.close())
  return s
})

// The three topologies side by side (started in parallel: the cluster takes ~3 s to form).
const [single, cluster, sentinel] = await Promise.all([startRedis(), startCluster(), startSentinel()])
t.teardown(() => Promise.all([single.stop(), cluster.stop(), sentinel.stop()]))
const topologies: TestTopology[] = [single, cluster, sentinel]
const redisConfig = (topo: TestTopology, over: Partial<StoreConfig> = {}): StoreConfig =>
  memoryConfig({ type: 'redis', url: undefined, ...topo.store, ...over })

for (const topo of topologies) {
  suite(`redis store (${topo.name})`, async (t, cfg = {}, now) => {
    const s = createStore(redisConfig(topo, { keyPrefix: `t${++prefixes}:`, ...cfg }), silent, { now })
    t.teardown(() => s.close())
    await s.ready()
    return s
  }, topo)

  t.test(`redis (${topo.name}): a revocation on one instance is seen by another within 1 s`, async (t) => {
    const cfg = redisConfig(topo, { keyPrefix: 'multi:' })
    const a = createStore(cfg, silent)
    const b = createStore(cfg, silent)
    t.teardown(() => Promise.all([a.close(), b.close()]))
    await Promise.all([a.ready(), b.ready()])
    const iat = issuedNow()
    for (const [kind, revoke, subj] of [
      ['jti', () => a.revokeAccessToken('jti-x', Date.now() + MIN), { jti: 'jti-x', fid: 'f', appid: 'wx', openid: 'o', iatMs: iat }],
      ['family', () => a.revokeFamily('fid-x', Date.now() + MIN), { jti: 'j', fid: 'fid-x', appid: 'wx', openid: 'o', iatMs: iat }],
      ['user', () => a.revokeUserBefore('wx', 'o-x', Date.now() + 1, Date.now() + MIN), { jti: 'j', fid: 'f', appid: 'wx', openid: 'o-x', iatMs: iat }]
    ] as const) {
      t.notOk(b.isRevoked(subj), `${kind}: not revoked before`)
      const t0 = performance.now()
      await revoke()
      let seen = false
      while (performance.now() - t0 < 1000) {
        if (b.isRevoked(subj)) { seen = true; break }
        await sleep(2)
      }
      t.ok(seen, `${kind} revocation reached the other instance within 1 s`)
      t.comment(`${topo.name}: ${kind} revocation propagated in ${(performance.now() - t0).toFixed(1)} ms`)
    }
    // a third instance started afterwards loads the existing revocations at connect
    const c = createStore(cfg, silent)
    t.teardown(() => c.close())
    await c.ready()
    t.notOk(c.isRevoked({ jti: 'j', fid: 'f', appid: 'wx', openid: 'o', iatMs: iat }), 'the marker is the one the others saw: no cutoff of its own')
    t.ok(c.isRevoked({ jti: 'jti-x', fid: 'f', appid: 'wx', openid: 'o', iatMs: iat }), 'full reload at connect')
    t.ok(c.isRevoked({ jti: 'j', fid: 'fid-x', appid: 'wx', openid: 'o', iatMs: iat }))
    t.ok(c.isRevoked({ jti: 'j', fid: 'f', appid: 'wx', openid: 'o-x', iatMs: iat }))
  })

  t.test(`redis (${topo.name}): after a reconnect the mirror is reloaded, so a missed message is not missed for long`, async (t) => {
    const cfg = redisConfig(topo, { keyPrefix: 'resync:', failMode: 'open' })
    const ops: string[] = []
    const b = createStore(cfg, silent, { observe: (op) => ops.push(op) })
    t.teardown(() => b.close())
    await b.ready()
    // a revocation written to Redis whose pub/sub message this instance never got
    await topo.client().zadd('resync:{rv}:jti', Date.now() + MIN, 'missed-jti')
    const subj = { jti: 'missed-jti', fid: 'f', appid: 'wx', openid: 'o', iatMs: issuedNow() }
    t.notOk(b.isRevoked(subj), 'not known yet: nothing was published')
    // drop the subscriber connection, wherever it is (Cluster: on one of the nodes)
    for (const r of await topo.masters()) await r.client('KILL', 'TYPE', 'pubsub')
    const t0 = performance.now()
    while (!b.isRevoked(subj) && performance.now() - t0 < 5000) await sleep(10)
    t.ok(b.isRevoked(subj), 'picked up by the full reload after reconnecting')
    t.comment(`${topo.name}: mirror reloaded ${(performance.now() - t0).toFixed(0)} ms after the subscriber was cut`)
    await b.revokeAccessToken('j2', Date.now() + MIN)
    t.ok(ops.includes('revokeAccessToken'), 'operations are reported to the observe hook')
  })
}

/** Every call fails fast with STORE_UNAVAILABLE while the topology is down; it recovers by itself once back. */
async function outage (t: Tap, topo: TestTopology, down: () => Promise<void>, up: () => Promise<void>): Promise<void> {
  const closedCfg = redisConfig(topo, { keyPrefix: 'down:' })
  const s = createStore(closedCfg, silent)
  const open = createStore({ ...closedCfg, failMode: 'open' }, silent)
  t.teardown(() => Promise.all([s.close(), open.close()]))
  await Promise.all([s.ready(), open.ready()])
  await s.revokeAccessToken('before', Date.now() + MIN)
  const subj = { jti: 'before', fid: 'f', appid: 'wx', openid: 'o', iatMs: issuedNow() }
  // the other instance hears of it by pub/sub: let the message land before the outage
  while (!open.isRevoked(subj)) await sleep(5)
  t.ok(s.healthy())
  await down()
  // wait until the client noticed (socket close), not a timing assertion
  while (s.healthy() || open.healthy()) await sleep(10)
  const rec = record(Date.now())
  const unavailable = { errorName: 'STORE_UNAVAILABLE', code: 50010, statusCode: 503 }
  const t0 = performance.now()
  await t.rejects(s.setSessionKey('wx', 'o', 'sk', MIN), unavailable)
  await t.rejects(s.getSessionKey('wx', 'o'), unavailable)
  await t.rejects(s.createFamily(h('x'), rec), unavailable)
  await t.rejects(s.rotateRefresh(rotation(rec, h('x'), h('y'), Date.now())), unavailable)
  await t.rejects(s.revokeFamily('f', Date.now() + MIN), unavailable)
  await t.rejects(s.revokeAccessToken('j', Date.now() + MIN), unavailable)
  await t.rejects(s.revokeUserBefore('wx', 'o', Date.now(), Date.now() + MIN), unavailable)
  await t.rejects(s.claimLogin('k', 'A', 10_000), unavailable)
  await t.rejects(s.peekLogin('k'), unavailable)
  await t.rejects(s.ping(), unavailable)
  t.comment(`${topo.name}: 10 failed store calls took ${(performance.now() - t0).toFixed(1)} ms in all`)
  t.throws(() => s.isRevoked(subj), unavailable, 'failMode closed: the hot check refuses')
  t.equal(open.isRevoked(subj), true, 'failMode open: answers from the last known mirror')
  t.equal(open.isRevoked({ ...subj, jti: 'other' }), false)
  try { s.isRevoked(subj) } catch (err) {
    t.ok(err instanceof GatewayError && err.message === 'Session store is unavailable', 'catalog message, no library text')
  }

  const t1 = performance.now()
  await up()
  await s.ready(10_000)
  t.comment(`${topo.name}: ready again ${(performance.now() - t1).toFixed(0)} ms after the restart began`)
  // Synced first; a cluster's state ("slots covered") is re-read by the 1 s heartbeat, so healthy may trail by one beat.
  await t.resolves(waitUntil(() => s.healthy(), 3000), 'reconnected by itself')
  t.ok(s.isRevoked(subj), 'revocations known before the outage are kept')
  await s.setSessionKey('wx', 'o', 'sk2', MIN)
  t.equal(await s.getSessionKey('wx', 'o'), 'sk2')
  t.ok(await s.ping() >= 0)
}

t.test('the store logs where it connects, never the password of the URL', async (t) => {
  const lines: string[] = []
  const capture: StoreLogger = { info: (o, m) => lines.push(JSON.stringify(o) + String(m)), warn: (o, m) => lines.push(JSON.stringify(o) + String(m)), error () {} }
  const s = createStore(redisConfig(single, { url: `redis://:pa@ssword@127.0.0.1:${single.port}` }), capture)
  await s.close()
  const line = lines.find((l) => l.includes('redis store: connecting'))
  t.match(line, `127.0.0.1:${single.port}`, 'says where')
  t.notMatch(lines.join('\n'), /pa@ss|ssword/, 'not the password')
})

t.test('redis stopped: every call fails fast with STORE_UNAVAILABLE, then recovers', async (t) => {
  const own = await startRedis()
  t.teardown(own.stop)
  await outage(t, own, own.stop, own.restart)
})

t.test('regression: a Redis restarted empty does not un-revoke tokens, on the running instance and on a new one', async (t) => {
  const own = await startRedis()
  t.teardown(own.stop)
  const c = clock()
  const errors: string[] = []
  const lost: number[] = []
  const logger: StoreLogger = { info () {}, warn () {}, error: (o, m) => errors.push(String(m)) }
  const cfg = redisConfig(own, { keyPrefix: 'lost:' })
  const running = createStore(cfg, logger, { now: c.now, onStateLost: (since) => lost.push(since) })
  t.teardown(() => running.close())
  await running.ready()
  const iat = Math.floor(c.now() / 1000) * 1000
  const revoked = { jti: 'logged-out', fid: 'f1', appid: 'wx', openid: 'o1', iatMs: iat }
  const live = { jti: 'still-in', fid: 'f2', appid: 'wx', openid: 'o2', iatMs: iat }
  await running.revokeAccessToken(revoked.jti, c.now() + 15 * MIN)
  t.ok(running.isRevoked(revoked))
  t.notOk(running.isRevoked(live))
  t.same(lost, [], 'no loss at a first start')

  c.advance(2000) // the loss comes after these tokens were issued
  await own.restart() // no persistence: the data is gone
  const t0 = performance.now()
  const refuses = (s: Store, subj: typeof live): boolean => { try { return s.isRevoked(subj) } catch { return false } }
  while (!refuses(running, live) && performance.now() - t0 < 10_000) await sleep(5)
  const detectMs = performance.now() - t0
  t.ok(refuses(running, live), 'the running instance refuses a token issued before the loss')
  t.comment(`running instance: loss detected ${detectMs.toFixed(0)} ms after the restarted redis answered`)
  t.ok(running.isRevoked(revoked), 'and the logged-out one')
  t.equal(lost.length, 1, 'onStateLost called once (wegate_store_state_lost_total)')
  t.ok(errors.some((m) => m.includes('lost its state')), 'an error line says so')

  const fresh = createStore(cfg, silent, { now: c.now })
  t.teardown(() => fresh.close())
  await fresh.ready()
  t.ok(fresh.isRevoked(revoked), 'a new instance refuses the logged-out token whose revocation Redis forgot')
  t.ok(fresh.isRevoked(live), 'and every token issued before the loss')
  const after = { jti: 'new', fid: 'f3', appid: 'wx', openid: 'o3', iatMs: Math.floor(c.now() / 1000) * 1000 }
  t.notOk(fresh.isRevoked(after), 'a token issued after the loss works on the new instance')
  t.notOk(running.isRevoked(after), 'and on the running one')
  t.equal(lost.length, 1, 'counted once')
})

t.test('regression: a connection that ioredis ends (rather than retries) is started again', async (t) => {
  // seen with ioredis' sentinel failoverDetector: a +switch-master during a reconnect ended the client for good
  const s = createStore(redisConfig(single, { keyPrefix: 'ended:' }), silent)
  t.teardown(() => s.close())
  await s.ready()
  s.redisConnection()?.disconnect() // the same 'end' as ioredis giving up
  const t0 = performance.now()
  while (s.healthy() && performance.now() - t0 < 5000) await sleep(5)
  t.notOk(s.healthy(), 'lost')
  await s.ready(5000)
  t.ok(s.healthy(), 'connected again by itself')
  await s.setSessionKey('wx', 'o', 'sk', MIN)
  t.equal(await s.getSessionKey('wx', 'o'), 'sk')
})

// Last: these take the shared topologies through failures.
t.test('sentinel: a planned failover (SENTINEL FAILOVER) is followed at once; writes go to the new master', async (t) => {
  const s = createStore(redisConfig(sentinel, { keyPrefix: 'planned:' }), silent)
  t.teardown(() => s.close())
  await s.ready()
  await sentinel.waitReplicated()
  const { old, promoted } = await sentinel.failover()
  const now = await promoted
  const t0 = performance.now()
  t.not(now, old, 'the replica was promoted')
  // The old master is alive and still a master until the sentinels convert it (seconds later):
  // whatever it acknowledges meanwhile is lost. Our writes must reach the new one well before that.
  const direct = new Redis({ host: '127.0.0.1', port: now })
  t.teardown(() => direct.disconnect())
  let landed = false
  for (let i = 0; performance.now() - t0 < 5000; i++) {
    const ok = await s.setSessionKey('wx', `o${i}`, 'sk', MIN).then(() => true, () => false)
    if (ok && await direct.get(`planned:{u:wx:o${i}}:sk`) === 'sk') { landed = true; break }
    await sleep(20)
  }
  t.ok(landed, 'a write acknowledged after the promotion is on the new master')
  t.comment(`sentinel (planned failover): writes reach the new master ${(performance.now() - t0).toFixed(0)} ms after the sentinel named it`)
  while (!s.healthy() && performance.now() - t0 < 10_000) await sleep(20)
  t.ok(s.healthy(), 'healthy')
})

t.test('cluster: the master holding the subscriber is lost: unhealthy (cluster_state fail), calls fail fast; it rejoins, the subscriber has moved, all is well', async (t) => {
  const cfg = redisConfig(cluster, { keyPrefix: 'lost:' })
  const s = createStore(cfg, silent)
  const w = createStore(cfg, silent)
  t.teardown(() => Promise.all([s.close(), w.close()]))
  await Promise.all([s.ready(), w.ready()])
  // the node our subscribers listen on (CLIENT LIST names them wegate-sub)
  const masters = await cluster.masters()
  const lists = await Promise.all(masters.map(async (r) => String(await r.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))))
  const lost = lists.findIndex((l) => l.includes('name=wegate-sub'))
  t.ok(lost >= 0, `the subscribers listen on node ${cluster.ports[lost]}`)
  await cluster.kill(lost)
  const t0 = performance.now()
  await cluster.waitFail()
  t.comment(`the other masters say cluster_state:fail ${(performance.now() - t0).toFixed(0)} ms after one was killed`)
  while (s.healthy() && performance.now() - t0 < 10_000) await sleep(20)
  t.notOk(s.healthy(), 'not healthy while the cluster is not ok')
  t.comment(`the store unhealthy ${(performance.now() - t0).toFixed(0)} ms after the kill`)
  // keys on every master: some hash to the lost one's slots
  const t1 = performance.now()
  const results = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => s.setSessionKey('wx', `o${i}`, 'sk', MIN)))
  t.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof GatewayError && r.reason.errorName === 'STORE_UNAVAILABLE'),
    'writes refused with STORE_UNAVAILABLE while the cluster is down')
  t.comment(`20 writes refused in ${(performance.now() - t1).toFixed(0)} ms`)
  await cluster.revive(lost)
  await cluster.waitOk()
  const t2 = performance.now()
  while ((!s.healthy() || !w.healthy()) && performance.now() - t2 < 10_000) await sleep(20)
  t.ok(s.healthy() && w.healthy(), 'healthy again by themselves')
  t.comment(`healthy ${(performance.now() - t2).toFixed(0)} ms after the cluster said ok again`)
  await Promise.all(Array.from({ length: 20 }, (_, i) => s.setSessionKey('wx', `o${i}`, 'sk', MIN)))
  t.equal(await s.getSessionKey('wx', 'o19'), 'sk', 'every slot served again')
  const moved = await Promise.all(masters.map(async (r) => String(await r.call('CLIENT', 'LIST', 'TYPE', 'pubsub'))))
  t.notOk(moved[lost].includes('name=wegate-sub'), 'the subscribers moved to another node while theirs was gone')
  const subj = { jti: 'after-loss', fid: 'f', appid: 'wx', openid: 'o', iatMs: issuedNow() }
  await w.revokeAccessToken(subj.jti, Date.now() + MIN)
  const t3 = performance.now()
  while (!s.isRevoked(subj) && performance.now() - t3 < 1000) await sleep(2)
  t.ok(s.isRevoked(subj), 'and still hear every revocation')
})

t.test('cluster stopped: every call fails fast with STORE_UNAVAILABLE, then recovers', async (t) => {
  await outage(t, cluster, async () => { await Promise.all(cluster.ports.map((_, i) => cluster.kill(i))) }, cluster.restart)
})
