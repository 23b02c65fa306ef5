import { createHmac } from 'node:crypto'
import t from 'tap'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { OFFICIAL_SAMPLE } from './helpers/wechat-sample.js'

const APP = { appId: 'wxemuhub000000001', secret: 'emu-hub-secret' }
let clock = 1_800_000_000_000
const emu = createWeChatEmulator({ apps: [APP, { appId: OFFICIAL_SAMPLE.appId, secret: 's2' }], now: () => clock })
const base = await emu.listen({ port: 0 })
t.teardown(() => emu.close())

async function call (method: 'GET' | 'POST', path: string, body?: unknown): Promise<{ type: string | null, json: Record<string, unknown> }> {
  const res = await fetch(base + path, { method, body: body === undefined ? undefined : JSON.stringify(body) })
  t.equal(res.status, 200)
  return { type: res.headers.get('content-type'), json: await res.json() as Record<string, unknown> }
}
const stable = (force = false, over: Record<string, unknown> = {}) =>
  call('POST', '/cgi-bin/stable_token', { grant_type: 'client_credential', appid: APP.appId, secret: APP.secret, force_refresh: force, ...over })
const phone = (token: string, code: string) => call('POST', `/wxa/business/getuserphonenumber?access_token=${encodeURIComponent(token)}`, { code })

t.test('stable_token: text/plain, the same token while valid, a new one on force, the old one then 40001', async (t) => {
  const a = await stable()
  t.equal(a.type, 'text/plain')
  t.equal(a.json.expires_in, 7200)
  t.type(a.json.access_token, 'string')
  clock += 60_000
  const b = await stable()
  t.equal(b.json.access_token, a.json.access_token, 'normal mode: same token')
  t.equal(b.json.expires_in, 7140, 'with what is left of its life')
  t.equal((await phone(String(a.json.access_token), 'phone-13900000000')).json.errcode, 0)

  const forcedBefore = emu.forcedRefreshes
  const c = await stable(true)
  t.not(c.json.access_token, a.json.access_token, 'forced: a new token')
  t.equal(emu.forcedRefreshes, forcedBefore + 1)
  t.equal(c.json.expires_in, 7200)
  t.equal((await phone(String(a.json.access_token), 'x-1')).json.errcode, 40001, 'the old token is refused')
  t.equal((await phone(String(c.json.access_token), 'x-2')).json.errcode, 0)

  const rotated = emu.rotateToken(APP.appId)
  t.equal(emu.currentToken(APP.appId), rotated)
  t.equal((await phone(String(c.json.access_token), 'x-3')).json.errcode, 40001, 'rotated behind the caller\'s back')
  t.equal((await stable()).json.access_token, rotated, 'normal mode hands out the rotated token')
})

t.test('stable_token: renewed in normal mode during its last 5 minutes, the old one living to its end; 42001 after expiry', async (t) => {
  const a = String((await stable(true)).json.access_token)
  clock += 7200_000 - 200_000
  const b = String((await stable()).json.access_token)
  t.not(b, a, 'a new token in the renew window')
  t.equal((await phone(a, 'y-1')).json.errcode, 0, 'the old one still works')
  clock += 200_000
  t.equal((await phone(a, 'y-2')).json.errcode, 42001, 'expired')
  t.equal((await phone(b, 'y-3')).json.errcode, 0)
})

t.test('stable_token errors', async (t) => {
  t.equal((await stable(false, { appid: 'wxnope' })).json.errcode, 40013)
  t.equal((await stable(false, { secret: 'nope' })).json.errcode, 40125)
  t.equal((await stable(false, { grant_type: 'x' })).json.errcode, 40002)
  t.equal((await call('POST', '/cgi-bin/stable_token', 'not json')).json.errcode, 47001)
  emu.failNext('stable_token', 40164)
  const e = await stable()
  t.equal(e.json.errcode, 40164)
  t.match(e.json.errmsg, /rid: [0-9a-f]{8}-/)
  t.equal((await stable()).json.errcode, undefined, 'only the next one')
})

t.test('getuserphonenumber: a phone_info with the app\'s watermark; triggers; codes work once', async (t) => {
  const token = String((await stable()).json.access_token)
  const ok = await phone(token, 'phone-13800138000')
  t.same(ok.json.phone_info, { phoneNumber: '13800138000', purePhoneNumber: '13800138000', countryCode: 86, watermark: { timestamp: Math.floor(clock / 1000), appid: APP.appId } })
  t.equal((await phone(token, 'phone-13800138000')).json.errcode, 40029, 'single use')
  t.match((await phone(token, 'any-code')).json.phone_info, { purePhoneNumber: /^13\d{9}$/ })
  t.equal((await phone(token, 'err45011-a')).json.errcode, 45011)
  t.equal((await phone(token, 'err40013-a')).json.errcode, 40013)
  t.equal((await phone(token, 'busyonce-a')).json.errcode, -1)
  t.equal((await phone(token, 'busyonce-a')).json.errcode, 0)
  t.match((await phone(token, 'otherapp-a')).json.phone_info, { watermark: { appid: 'wx00000000otherapp' } })
  t.equal((await phone('', 'z')).json.errcode, 41001)
  t.equal((await phone(token, '')).json.errcode, 47001)
  emu.failNext('getuserphonenumber', 40014, 2)
  t.equal((await phone(token, 'z1')).json.errcode, 40014)
  t.equal((await phone(token, 'z2')).json.errcode, 40014)
  t.equal((await phone(token, 'z3')).json.errcode, 0)
})

t.test('checksession: hmac_sha256(session_key, "") of the latest login is valid; else 87009', async (t) => {
  const token = String((await stable()).json.access_token)
  const login = async (code: string) => {
    const r = await fetch(`${base}/sns/jscode2session?appid=${APP.appId}&secret=${APP.secret}&js_code=${code}&grant_type=authorization_code`)
    return await r.json() as { openid: string, session_key: string }
  }
  const check = async (openid: string, key: string, method = 'hmac_sha256') => (await call('GET',
    `/wxa/checksession?access_token=${encodeURIComponent(token)}&openid=${openid}&signature=${createHmac('sha256', key).update('').digest('hex')}&sig_method=${method}`)).json
  const s1 = await login('u-carol-1')
  t.same(await check(s1.openid, s1.session_key), { errcode: 0, errmsg: 'ok' })
  t.equal((await check(s1.openid, s1.session_key, 'md5')).errcode, 87009)
  const s2 = await login('u-carol-2')
  t.equal((await check(s1.openid, s1.session_key)).errcode, 87009, 'a newer login replaces the session_key')
  t.equal((await check(s2.openid, s2.session_key)).errcode, 0)
  emu.expireSession(APP.appId, s2.openid)
  t.equal((await check(s2.openid, s2.session_key)).errcode, 87009)
  t.equal((await call('GET', '/wxa/checksession?access_token=nope&openid=x&signature=y&sig_method=hmac_sha256')).json.errcode, 40001)
})

t.test('key-<base64url>: code2Session hands out that session_key (the official sample end to end)', async (t) => {
  const code = 'key-' + Buffer.from(OFFICIAL_SAMPLE.sessionKey, 'base64').toString('base64url') + '-1'
  const r = await fetch(`${base}/sns/jscode2session?appid=${OFFICIAL_SAMPLE.appId}&secret=s2&js_code=${code}&grant_type=authorization_code`)
  t.equal((await r.json() as { session_key: string }).session_key, OFFICIAL_SAMPLE.sessionKey)
})

t.test('counters', async (t) => {
  t.ok(emu.tokenCalls > 0)
  t.ok(emu.phoneCalls > 0)
  t.ok(emu.checkCalls > 0)
})
