/**
 * One wx.login code, several logins (a client retrying a slow or lost answer),
 * spread by a load balancer over two gateway instances on one Redis: WeChat is
 * asked once, and every login gets the same answer — the same token pair, or
 * the same error.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { createStore, type Store } from '../src/store/index.js'
import { GatewayError } from '../src/errors.js'
import { startGateway } from './helpers/gateway.js'
import { APP_A, authConfig, bearer, get, login, post, redisFor, startAuthGateway, startEcho, startWeChat, type Answer } from './helpers/auth.js'

const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const patch = { tokens: { keys: [{ kid: 'k1', secret: 'same-code-secret-0123456789abcdef-xyz' }] } }
const a = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch })
const b = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch })

const tokensOf = (x: Answer) => [x.json?.data?.accessToken, x.json?.data?.refreshToken]

t.test('the same code posted to both instances at once: one code2Session call, one token pair for both', async (t) => {
  const calls = wx.emulator.calls
  // 300 ms at WeChat: the second login arrives while the first is still exchanging.
  const [x, y] = await Promise.all([
    post(a.url + '/auth/login', { code: 'slow300-both' }),
    post(b.url + '/auth/login', { code: 'slow300-both' })
  ])
  t.equal(x.status, 200, 'A answers 200')
  t.equal(y.status, 200, 'B answers 200, not 10002 "code already used"')
  t.equal(wx.emulator.calls - calls, 1, 'WeChat was asked once')
  t.same(tokensOf(y), tokensOf(x), 'the same access and refresh token on both')
  t.equal(y.json?.data.openid, x.json?.data.openid)
  t.ok(y.json?.data.expiresIn <= x.json?.data.expiresIn && y.json?.data.expiresIn >= x.json?.data.expiresIn - 1, 'expiresIn agrees')

  // It is one session: the pair works anywhere, and its refresh token rotates once.
  t.equal((await get(b.url + '/api/me', bearer(x.json?.data.accessToken))).status, 200)
  const r = await post(b.url + '/auth/refresh', { refreshToken: y.json?.data.refreshToken })
  t.equal(r.status, 200)
})

t.test('a retry on the other instance after the answer: the same pair, WeChat not asked again', async (t) => {
  const calls = wx.emulator.calls
  const first = await post(a.url + '/auth/login', { code: 'u-seq-1' })
  t.equal(first.status, 200)
  const again = await post(b.url + '/auth/login', { code: 'u-seq-1' })
  t.equal(again.status, 200, 'regression: B used to call WeChat again and answer 10002')
  t.same(tokensOf(again), tokensOf(first))
  const onA = await post(a.url + '/auth/login', { code: 'u-seq-1' })
  t.same(tokensOf(onA), tokensOf(first), 'and on the first instance too')
  t.equal(wx.emulator.calls - calls, 1)
})

t.test('a WeChat error is shared too: both instances give the same answer', async (t) => {
  const calls = wx.emulator.calls
  const [x, y] = await Promise.all([
    post(a.url + '/auth/login', { code: 'err40029-both' }),
    post(b.url + '/auth/login', { code: 'err40029-both' })
  ])
  for (const ans of [x, y]) {
    t.equal(ans.status, 401)
    t.equal(ans.json?.code, 10001, 'invalid code on both')
  }
  const later = await post(b.url + '/auth/login', { code: 'err40029-both' })
  t.equal(later.json?.code, 10001, 'a later retry gets it too')
  t.equal(wx.emulator.calls - calls, 1, 'one code2Session call (errcode 40029 is not retried)')
})

t.test('a transient WeChat failure is shared with the logins waiting, not remembered', async (t) => {
  const calls = wx.emulator.calls
  // errcode -1 (busy): 3 attempts; both logins get the one 503.
  const [x, y] = await Promise.all([
    post(a.url + '/auth/login', { code: 'err-1-both' }),
    post(b.url + '/auth/login', { code: 'err-1-both' })
  ])
  t.same([x.json?.code, y.json?.code], [50001, 50001])
  const n = wx.emulator.calls - calls
  t.ok(n === 3 || n === 6, `one exchange of 3 attempts (6 when B arrived after A's answer): ${n}`)
  const retry = await post(b.url + '/auth/login', { code: 'err-1-both' })
  t.equal(retry.json?.code, 50001)
  t.equal(wx.emulator.calls - calls - n, 3, 'a later retry asks WeChat again: busy may pass')
})

t.test('an instance that died holding the claim: the other waits for the claim to expire, then logs in itself', async (t) => {
  // What an instance killed mid-exchange leaves behind: its claim, with a TTL, and no outcome.
  const raw = new Redis(redis.url)
  t.teardown(() => raw.disconnect())
  const key = createHash('sha256').update(`${APP_A.appId}\u0000u-orphan-1`).digest('hex')
  await raw.set(`wegate:{login:${key}}`, 'p:dead-instance', 'PX', 800)
  const calls = wx.emulator.calls
  const t0 = performance.now()
  const res = await post(b.url + '/auth/login', { code: 'u-orphan-1' })
  const ms = performance.now() - t0
  t.equal(res.status, 200, 'the code never reached WeChat, so the login succeeds')
  t.ok(ms >= 700, `it waited for the claim to expire (${ms.toFixed(0)} ms)`)
  t.equal(wx.emulator.calls - calls, 1)
})

t.test('the stored outcome is sealed with the code: Redis holds no token in clear', async (t) => {
  const d = await login(a.url, 'u-sealed-1')
  const raw = new Redis(redis.url)
  t.teardown(() => raw.disconnect())
  const key = createHash('sha256').update(`${APP_A.appId}\u0000u-sealed-1`).digest('hex')
  const stored = await raw.get(`wegate:{login:${key}}`)
  t.ok(stored?.startsWith('d:'), 'the outcome is there')
  t.notOk(stored?.includes(d.refreshToken) || stored?.includes(d.accessToken.split('.')[1] ?? '-') || stored?.includes(d.openid),
    'neither token nor the openid readable')
  const ttl = await raw.pttl(`wegate:{login:${key}}`)
  t.ok(ttl > 0 && ttl <= 10_000, `kept 10 s at most (${ttl} ms)`)
})

t.test('WeChat answered, then the store failed: a retry on this instance finishes the login without WeChat', async (t) => {
  const base = createStore({ type: 'memory', url: '', keyPrefix: 'wegate:', failMode: 'closed', maxEntries: 1000 }, { info () {}, warn () {}, error () {} })
  t.teardown(() => base.close())
  let failNext = true
  const flaky: Store = {
    ...base,
    async createFamily (hash, record) {
      if (failNext) {
        failNext = false
        throw new GatewayError('STORE_UNAVAILABLE', { detail: 'test: the store failed after the exchange' })
      }
      return await base.createFamily(hash, record)
    }
  }
  const g = await startGateway(t, authConfig({ wechatUrl: wx.url, echoUrl }), { store: flaky })
  const calls = wx.emulator.calls
  const lost = await post(g.url + '/auth/login', { code: 'u-flaky-1' })
  t.equal(lost.json?.code, 50010)
  t.equal(wx.emulator.calls - calls, 1, 'WeChat answered (and spent the code)')
  const retry = await post(g.url + '/auth/login', { code: 'u-flaky-1' })
  t.equal(retry.status, 200, 'the retry is not 10002')
  t.equal(wx.emulator.calls - calls, 1, 'WeChat was not asked again')
  const again = await post(g.url + '/auth/login', { code: 'u-flaky-1' })
  t.same(tokensOf(again), tokensOf(retry), 'and later retries share that login')
})
