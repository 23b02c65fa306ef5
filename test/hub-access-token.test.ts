import pino from 'pino'
import t, { type Test } from 'tap'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { createAccessTokenService, type AccessTokenService, type RefreshReason } from '../src/wechat/access-token.js'
import { createWeChatHttp, type WeChatHttp, type WeChatRequest } from '../src/wechat/http.js'
import { createMemoryTokenCache, createRedisTokenCache, type TokenCachePort } from '../src/wechat/token-cache.js'
import { GatewayError } from '../src/errors.js'
import { startRedis } from './helpers/redis.js'

const APP = { appId: 'wxtokenhub0000001', secret: 'token-hub-secret' }
let clock = 1_800_000_000_000
const now = () => clock
const emu = createWeChatEmulator({ apps: [APP], now })
const emuUrl = await emu.listen({ port: 0 })
t.teardown(() => emu.close())
const redis = await startRedis()
t.teardown(() => redis.stop())

interface Instance { svc: AccessTokenService, refreshes: Array<{ reason: RefreshReason, forced: boolean, ok: boolean }>, lines: () => Array<Record<string, unknown>> }

let prefixN = 0
/** A fresh key namespace: the instances of one test share it, tests do not. */
const namespace = () => `hubtest${++prefixN}:`

function instance (t: Test, cache: TokenCachePort, opts: { retries?: number } = {}): Instance {
  const raw: string[] = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => { raw.push(s) } })
  const http: WeChatHttp = createWeChatHttp({ baseUrl: emuUrl, timeoutMs: 15_000, retries: opts.retries ?? 1, logger, random: () => 0 })
  t.teardown(() => http.close())
  const refreshes: Instance['refreshes'] = []
  const svc = createAccessTokenService({
    cache,
    http: () => http,
    app: (id) => (id === APP.appId ? APP : undefined),
    logger,
    now,
    pollMs: 5,
    onRefresh: (_app, reason, forced, ok) => refreshes.push({ reason, forced, ok })
  })
  return { svc, refreshes, lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>) }
}

/** Two instances sharing one Redis namespace (two gateways on one Redis). */
function pair (t: Test): [Instance, Instance] {
  const ns = namespace()
  return [instance(t, createRedisTokenCache(redis.client(), ns)), instance(t, createRedisTokenCache(redis.client(), ns))]
}

/** A fresh app state at WeChat: someone forced a refresh, so nothing cached anywhere is valid. */
function resetWeChat (): void { emu.rotateToken(APP.appId) }

const phoneRequest = (code: string) => (token: string): WeChatRequest =>
  ({ api: 'getuserphonenumber', method: 'POST', path: '/wxa/business/getuserphonenumber', query: { access_token: token }, body: { code } })

/** stable_token calls and forced refreshes the emulator sees while `fn` runs. */
async function counted (fn: () => Promise<unknown>): Promise<{ fetches: number, forced: number }> {
  const calls = emu.tokenCalls
  const forced = emu.forcedRefreshes
  await fn()
  return { fetches: emu.tokenCalls - calls, forced: emu.forcedRefreshes - forced }
}

t.test('two instances on one Redis serve 200 concurrent token reads with exactly one stable_token call', async (t) => {
  resetWeChat()
  const [a, b] = pair(t)
  let tokens: string[] = []
  const c = await counted(async () => {
    tokens = (await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 === 0 ? a : b).svc.get(APP.appId)))).map((x) => x.accessToken)
  })
  t.same(c, { fetches: 1, forced: 0 })
  t.equal(new Set(tokens).size, 1, 'everyone got the same token')
  t.equal(tokens[0], emu.currentToken(APP.appId))
  t.same([...a.refreshes, ...b.refreshes], [{ reason: 'initial', forced: false, ok: true }])
  const later = await counted(() => b.svc.get(APP.appId))
  t.same(later, { fetches: 0, forced: 0 }, 'cached for later readers')
  t.equal((await a.svc.get(APP.appId)).expiresIn, 7200)
})

t.test('a token rotated behind wegate\'s back (40001) is refreshed once and the call succeeds', async (t) => {
  resetWeChat()
  const [a] = pair(t)
  await a.svc.get(APP.appId)
  emu.rotateToken(APP.appId)
  let outcome: Awaited<ReturnType<AccessTokenService['call']>> | undefined
  const c = await counted(async () => { outcome = await a.svc.call(APP.appId, phoneRequest('phone-13700000001')) })
  t.equal(outcome?.kind, 'ok')
  t.same(c, { fetches: 1, forced: 1 }, 'one forced refresh')
  t.equal((await a.svc.get(APP.appId)).accessToken, emu.currentToken(APP.appId), 'the new token is cached')
  t.notOk(a.lines().some((l) => JSON.stringify(l).includes(String(emu.currentToken(APP.appId)))), 'the token is never logged')
})

t.test('20 concurrent 40001s on two instances: one forced refresh, every call succeeds', async (t) => {
  resetWeChat()
  const [a, b] = pair(t)
  await a.svc.get(APP.appId)
  emu.rotateToken(APP.appId)
  let outcomes: string[] = []
  const c = await counted(async () => {
    outcomes = (await Promise.all(Array.from({ length: 20 }, (_, i) =>
      (i % 2 === 0 ? a : b).svc.call(APP.appId, phoneRequest(`burst-${i}`))))).map((o) => o.kind)
  })
  t.same(outcomes, Array(20).fill('ok'))
  t.same(c, { fetches: 1, forced: 1 })
})

t.test('a second refusal within the minimum interval fetches WeChat\'s current token instead of forcing again', async (t) => {
  resetWeChat()
  const [a, b] = pair(t)
  await a.svc.get(APP.appId)
  emu.rotateToken(APP.appId)
  t.same(await counted(() => a.svc.call(APP.appId, phoneRequest('mi-1'))), { fetches: 1, forced: 1 })
  // WeChat refuses the fresh token once (as it may right after a rotation): no second forced refresh yet.
  emu.failNext('getuserphonenumber', 40001)
  let kind = ''
  t.same(await counted(async () => { kind = (await b.svc.call(APP.appId, phoneRequest('mi-2'))).kind }), { fetches: 1, forced: 0 })
  t.equal(kind, 'ok', 'the retry with WeChat\'s current token succeeds')
  clock += 31_000
  emu.failNext('getuserphonenumber', 42001)
  t.same(await counted(() => b.svc.call(APP.appId, phoneRequest('mi-3'))), { fetches: 1, forced: 1 }, 'after the interval a forced refresh is allowed again')
})

t.test('still refused after the refresh: one retry only, then WECHAT_TOKEN_REJECTED from the caller\'s mapping', async (t) => {
  resetWeChat()
  const [a] = pair(t)
  await a.svc.get(APP.appId)
  emu.failNext('getuserphonenumber', 40014, 2)
  const before = emu.phoneCalls
  const r = await a.svc.call(APP.appId, phoneRequest('twice'))
  t.equal(r.kind, 'errcode')
  t.equal(emu.phoneCalls - before, 2, 'the call and one retry')
})

t.test('backend refresh requests: 10 concurrent ones on two instances force once; again within 30 s: no force', async (t) => {
  resetWeChat()
  const [a, b] = pair(t)
  const first = await a.svc.get(APP.appId)
  clock += 60_000
  let tokens: string[] = []
  const c = await counted(async () => {
    tokens = (await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).svc.refresh(APP.appId, 'backend')))).map((x) => x.accessToken)
  })
  t.same(c, { fetches: 1, forced: 1 })
  t.equal(new Set(tokens).size, 1)
  t.not(tokens[0], first.accessToken)
  clock += 10_000
  t.same(await counted(() => b.svc.refresh(APP.appId, 'backend')), { fetches: 0, forced: 0 }, 'deduplicated within the interval')
  t.same([...a.refreshes, ...b.refreshes].map((r) => r.reason), ['initial', 'backend'])
})

t.test('ahead of expiry: one scheduled refresh across instances; a reader in the window gets the valid token and starts one', async (t) => {
  resetWeChat()
  const [a, b] = pair(t)
  const first = await a.svc.get(APP.appId)
  clock += 7200_000 - 3 * 60_000
  t.same(await counted(() => Promise.all([a.svc.tick([APP.appId]), b.svc.tick([APP.appId])])), { fetches: 1, forced: 0 }, 'both ticks: one fetch')
  const next = await a.svc.get(APP.appId)
  t.not(next.accessToken, first.accessToken, 'renewed')
  t.equal(next.expiresIn, 7200)
  t.same(await counted(() => Promise.all([a.svc.tick([APP.appId]), b.svc.tick([APP.appId])])), { fetches: 0, forced: 0 }, 'nothing to do when fresh')

  clock += 7200_000 - 3 * 60_000
  const calls = emu.tokenCalls
  t.equal((await b.svc.get(APP.appId)).accessToken, next.accessToken, 'in the window: the still valid token at once')
  // The background refresh lands in the shared cache.
  let seen = next.accessToken
  for (let i = 0; i < 400 && seen === next.accessToken; i++) {
    await new Promise((resolve) => setImmediate(resolve))
    seen = (await a.svc.get(APP.appId)).accessToken
  }
  t.not(seen, next.accessToken, 'refreshed in the background')
  t.equal(emu.tokenCalls - calls, 1, 'by one fetch')

  clock += 7200_000 + 1000
  t.same(await counted(() => a.svc.get(APP.appId)), { fetches: 1, forced: 0 }, 'expired in the cache: fetched on demand')
})

t.test('the memory cache: one instance, single flight', async (t) => {
  resetWeChat()
  const a = instance(t, createMemoryTokenCache(now))
  t.same(await counted(() => Promise.all(Array.from({ length: 50 }, () => a.svc.get(APP.appId)))), { fetches: 1, forced: 0 })
  emu.rotateToken(APP.appId)
  t.same(await counted(() => Promise.all(Array.from({ length: 20 }, (_, i) => a.svc.call(APP.appId, phoneRequest(`mem-${i}`))))), { fetches: 1, forced: 1 })
})

t.test('stable_token failures become catalog errors; the operator is told what to fix', async (t) => {
  resetWeChat()
  const cases: Array<[number, string, RegExp | undefined]> = [
    [40125, 'WECHAT_SERVICE_MISCONFIGURED', /wechat\.apps\[\]\.secret/],
    [40013, 'WECHAT_SERVICE_MISCONFIGURED', /wechat\.apps\[\]\.appId/],
    [40164, 'WECHAT_SERVICE_MISCONFIGURED', /IP whitelist/],
    [45009, 'WECHAT_API_QUOTA', undefined],
    [45011, 'WECHAT_API_QUOTA', undefined],
    [40002, 'WECHAT_BAD_RESPONSE', undefined]
  ]
  for (const [errcode, name, hint] of cases) {
    const a = instance(t, createMemoryTokenCache(now))
    emu.failNext('stable_token', errcode)
    const err = await a.svc.get(APP.appId).then(() => null, (e: unknown) => e)
    t.type(err, GatewayError)
    t.equal((err as GatewayError).errorName, name, String(errcode))
    if (hint !== undefined) t.match(a.lines().find((l) => l.level === 50)?.msg, hint)
    t.notOk(a.lines().some((l) => JSON.stringify(l).includes(APP.secret)), 'the secret is never logged')
  }
  const busy = instance(t, createMemoryTokenCache(now), { retries: 1 })
  emu.failNext('stable_token', -1)
  t.ok((await busy.svc.get(APP.appId)).accessToken, '-1 once is retried')
  const unknown = await busy.svc.get('wxnotconfigured00').then(() => null, (e: unknown) => e)
  t.equal((unknown as GatewayError).errorName, 'UNKNOWN_APP')
})

t.test('Redis down: STORE_UNAVAILABLE, fast', async (t) => {
  const own = await startRedis()
  const a = instance(t, createRedisTokenCache(own.client(), namespace()))
  await own.stop()
  const err = await a.svc.get(APP.appId).then(() => null, (e: unknown) => e)
  t.equal((err as GatewayError).errorName, 'STORE_UNAVAILABLE')
})
