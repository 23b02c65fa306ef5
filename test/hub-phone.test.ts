import pino from 'pino'
import t, { type Test } from 'tap'
import { GatewayError } from '../src/errors.js'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { createAccessTokenService } from '../src/wechat/access-token.js'
import { createWeChatHttp } from '../src/wechat/http.js'
import { createMemoryPhones, createRedisPhones, fetchPhoneNumber, phoneHeader, type PhonePort } from '../src/wechat/phone.js'
import { checkSessionKey } from '../src/wechat/session-check.js'
import { createMemoryTokenCache } from '../src/wechat/token-cache.js'
import { startRedis } from './helpers/redis.js'

const APP = { appId: 'wxphonehub0000001', secret: 'phone-hub-secret' }
let clock = 1_800_000_000_000
const now = () => clock
const emu = createWeChatEmulator({ apps: [APP], now })
const emuUrl = await emu.listen({ port: 0 })
t.teardown(() => emu.close())

function hub (t: Test) {
  const raw: string[] = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => { raw.push(s) } })
  const http = createWeChatHttp({ baseUrl: emuUrl, timeoutMs: 15_000, retries: 1, logger, random: () => 0 })
  t.teardown(() => http.close())
  const tokens = createAccessTokenService({ cache: createMemoryTokenCache(now), http: () => http, app: (id) => (id === APP.appId ? APP : undefined), logger, now })
  return { deps: { tokens, http: () => http, logger }, lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>) }
}

async function failure (p: Promise<unknown>): Promise<GatewayError> {
  const e = await p.then(() => null, (err: unknown) => err)
  if (!(e instanceof GatewayError)) throw new Error(`expected a GatewayError, got ${String(e)}`)
  return e
}

t.test('a phone code becomes the verified number; the header form is +<country><pure>', async (t) => {
  const { deps } = hub(t)
  const p = await fetchPhoneNumber(deps, APP.appId, 'phone-13812345678')
  t.same(p, { phoneNumber: '13812345678', purePhoneNumber: '13812345678', countryCode: '86' })
  t.equal(phoneHeader(p), '+8613812345678')
})

t.test('getuserphonenumber errcodes map to clear envelopes', async (t) => {
  const { deps, lines } = hub(t)
  const cases: Array<[string, string, number]> = [
    ['err40029-a', 'PHONE_CODE_INVALID', 400],
    ['err45011-a', 'WECHAT_API_QUOTA', 503],
    ['err40013-a', 'WECHAT_SERVICE_MISCONFIGURED', 503],
    ['err-1-a', 'WECHAT_UNAVAILABLE', 503],
    ['err61000-a', 'WECHAT_BAD_RESPONSE', 502],
    ['otherapp-a', 'WECHAT_BAD_RESPONSE', 502]
  ]
  for (const [code, name, status] of cases) {
    const e = await failure(fetchPhoneNumber(deps, APP.appId, code))
    t.equal(e.errorName, name, code)
    t.equal(e.statusCode, status)
  }
  const used = 'phone-13800000009'
  await fetchPhoneNumber(deps, APP.appId, used)
  t.equal((await failure(fetchPhoneNumber(deps, APP.appId, used))).errorName, 'PHONE_CODE_INVALID', 'a code works once')
  t.equal((await failure(fetchPhoneNumber(deps, APP.appId, 'err45011-b'))).headers?.['Retry-After'], '60')
  t.ok(lines().some((l) => l.level === 50 && /watermark/.test(String(l.msg))), 'another app\'s watermark is logged as an error')
})

t.test('-1 once is retried; a refused token is refreshed once and the call retried', async (t) => {
  const { deps } = hub(t)
  t.equal((await fetchPhoneNumber(deps, APP.appId, 'busyonce-p1')).countryCode, '86')
  emu.rotateToken(APP.appId)
  const forced = emu.forcedRefreshes
  t.equal((await fetchPhoneNumber(deps, APP.appId, 'phone-13900000001')).purePhoneNumber, '13900000001')
  t.equal(emu.forcedRefreshes - forced, 1)
  emu.failNext('getuserphonenumber', 40001, 2)
  t.equal((await failure(fetchPhoneNumber(deps, APP.appId, 'p-2'))).errorName, 'WECHAT_TOKEN_REJECTED', 'refused again after the refresh')
})

t.test('checksession: the latest session_key is valid, an older one or an expired session is not', async (t) => {
  const { deps } = hub(t)
  const login = async (code: string) => {
    const r = await fetch(`${emuUrl}/sns/jscode2session?appid=${APP.appId}&secret=${APP.secret}&js_code=${code}&grant_type=authorization_code`)
    return await r.json() as { openid: string, session_key: string }
  }
  const s1 = await login('u-dora-1')
  t.equal(await checkSessionKey(deps, APP.appId, s1.openid, s1.session_key), true)
  const s2 = await login('u-dora-2')
  t.equal(await checkSessionKey(deps, APP.appId, s1.openid, s1.session_key), false)
  t.equal(await checkSessionKey(deps, APP.appId, s2.openid, s2.session_key), true)
  emu.expireSession(APP.appId, s2.openid)
  t.equal(await checkSessionKey(deps, APP.appId, s2.openid, s2.session_key), false)
  emu.failNext('checksession', 45011)
  t.equal((await failure(checkSessionKey(deps, APP.appId, s2.openid, s2.session_key))).errorName, 'WECHAT_API_QUOTA')
})

async function phonePort (t: Test, port: PhonePort, label: string): Promise<void> {
  const p = { phoneNumber: '13812345678', purePhoneNumber: '13812345678', countryCode: '86' }
  t.equal(await port.get(APP.appId, 'oA'), null, `${label}: nothing at first`)
  await port.set(APP.appId, 'oA', p, 60_000)
  t.same(await port.get(APP.appId, 'oA'), p, `${label}: kept`)
  t.equal(await port.get(APP.appId, 'oB'), null, `${label}: per user`)
  t.equal(await port.get('wxother', 'oA'), null, `${label}: per app`)
}

t.test('verified numbers kept per app and user: memory (expiring on the clock) and Redis', async (t) => {
  const mem = createMemoryPhones(now)
  await phonePort(t, mem, 'memory')
  clock += 60_001
  t.equal(await mem.get(APP.appId, 'oA'), null, 'memory: gone after its ttl')
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await phonePort(t, createRedisPhones(redis.client(), 'phonetest:'), 'redis')
  t.ok(await redis.client().pttl('phonetest:{u:wxphonehub0000001:oA}:phone') > 59_000, 'redis: with its ttl, next to the session_key')
})
