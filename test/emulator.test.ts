import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { createWeChatEmulator, DEMO_APP, type WeChatEmulatorOptions } from '../src/emulator/wechat.js'

interface Answer {
  status: number
  type: string | undefined
  text: string
  json: Record<string, unknown>
}

const APP = { appId: 'wxtest0000000001', secret: 'test-secret-1' }
const OTHER = { appId: 'wxtest0000000002', secret: 'test-secret-2' }

async function start (t: Test, opts: WeChatEmulatorOptions = { apps: [APP, OTHER] }) {
  const emu = createWeChatEmulator(opts)
  const base = await emu.listen({ port: 0 })
  t.teardown(() => emu.close())
  return { emu, base }
}

async function get (url: string): Promise<Answer> {
  const res = await request(url)
  const text = await res.body.text()
  let json: Record<string, unknown> = {}
  try { json = JSON.parse(text) } catch {}
  const type = res.headers['content-type']
  return { status: res.statusCode, type: Array.isArray(type) ? type[0] : type, text, json }
}

function login (base: string, code: string, app = APP, extra: Record<string, string> = {}): Promise<Answer> {
  const q = new URLSearchParams({ appid: app.appId, secret: app.secret, js_code: code, grant_type: 'authorization_code', ...extra })
  return get(`${base}/sns/jscode2session?${q}`)
}

const RID = /, rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$/

function assertError (t: Test, a: Answer, errcode: number, errmsg: string): void {
  t.equal(a.status, 200, 'HTTP 200 even for an error, like WeChat')
  t.equal(a.type, 'text/plain', 'text/plain, like WeChat')
  t.equal(a.json.errcode, errcode)
  t.match(a.json.errmsg, RID, 'rid inside errmsg')
  t.equal(String(a.json.errmsg).replace(RID, ''), errmsg)
}

t.test('a plain code succeeds with a session_key and an openid, as text/plain', async (t) => {
  const { base, emu } = await start(t)
  const a = await login(base, 'abc123')
  t.equal(a.status, 200)
  t.equal(a.type, 'text/plain')
  t.same(Object.keys(a.json), ['session_key', 'openid'], 'no unionid for a plain code')
  t.equal(Buffer.from(String(a.json.session_key), 'base64').length, 16, 'session_key is 16 bytes base64')
  t.match(a.json.openid, /^o[A-Za-z0-9_-]{27}$/)
  t.equal(emu.calls, 1)
  t.same(emu.codes, ['abc123'])
})

t.test('a code works once: the second use is 40163', async (t) => {
  const { base } = await start(t)
  t.equal((await login(base, 'once')).json.errcode, undefined)
  assertError(t, await login(base, 'once'), 40163, 'code been used')
})

t.test('openid is stable per (app, code) and differs across apps', async (t) => {
  const a = await start(t)
  const b = await start(t)
  const first = await login(a.base, 'same-code')
  const again = await login(b.base, 'same-code')
  const other = await login(a.base, 'same-code', OTHER)
  t.equal(first.json.openid, again.json.openid, 'same (app, code) → same openid, even in another emulator')
  t.not(first.json.openid, other.json.openid, 'another app → another openid')
  t.not(first.json.session_key, again.json.session_key, 'session_key is fresh each time')
})

t.test('u-<name> codes: same user with different codes, unionid shared across apps', async (t) => {
  const { base } = await start(t)
  const one = await login(base, 'u-alice-1')
  const two = await login(base, 'u-alice-2')
  const bare = await login(base, 'u-alice')
  const elsewhere = await login(base, 'u-alice-1', OTHER)
  const bob = await login(base, 'u-bob-1')
  t.equal(one.json.openid, two.json.openid)
  t.equal(one.json.openid, bare.json.openid)
  t.match(one.json.unionid, /^o[A-Za-z0-9_-]{27}$/)
  t.equal(one.json.unionid, two.json.unionid)
  t.not(elsewhere.json.openid, one.json.openid, 'openid is per app')
  t.equal(elsewhere.json.unionid, one.json.unionid, 'unionid is per user across apps')
  t.not(bob.json.openid, one.json.openid)
  t.not(bob.json.unionid, one.json.unionid)
  assertError(t, await login(base, 'u-alice-1'), 40163, 'code been used')
})

t.test('err<errcode> triggers give that errcode every time, with WeChat\'s errmsg', async (t) => {
  const { base } = await start(t)
  const cases: Array<[string, number, string]> = [
    ['err40029-x', 40029, 'invalid code'],
    ['err40163-x', 40163, 'code been used'],
    ['err40226-x', 40226, 'high risk user'],
    ['err45011-x', 45011, 'api minute-quota reach limit  mustslower  retry next minute'],
    ['err-1-x', -1, 'system error'],
    ['err40013', 40013, 'invalid appid'],
    ['err12345-y', 12345, 'errcode 12345']
  ]
  for (const [code, errcode, errmsg] of cases) {
    assertError(t, await login(base, code), errcode, errmsg)
    assertError(t, await login(base, code), errcode, errmsg)
  }
})

t.test('request checks: unknown appid, wrong secret, missing code, bad grant_type, overlong code', async (t) => {
  const { base, emu } = await start(t)
  assertError(t, await login(base, 'c1', { appId: 'wxunknown', secret: APP.secret }), 40013, 'invalid appid')
  assertError(t, await login(base, 'c1', { appId: APP.appId, secret: 'wrong' }), 40125, 'invalid appsecret')
  assertError(t, await login(base, '', APP), 41008, 'missing code')
  assertError(t, await get(`${base}/sns/jscode2session?appid=${APP.appId}&secret=${APP.secret}&grant_type=authorization_code`), 41008, 'missing code')
  assertError(t, await login(base, 'c1', APP, { grant_type: 'client_credential' }), 40002, 'invalid grant_type')
  assertError(t, await login(base, 'x'.repeat(129)), 40029, 'invalid code')
  t.equal((await login(base, 'x'.repeat(128))).json.errcode, undefined, '128 chars is still a code')
  t.equal((await login(base, 'c1')).json.errcode, undefined, 'failed attempts did not spend the code')
  t.equal(emu.calls, 8)
})

t.test('the default app is the demo app of gateway.yaml', async (t) => {
  const { base } = await start(t, {})
  t.match((await login(base, 'demo', DEMO_APP)).json.openid, /^o/)
  assertError(t, await login(base, 'demo2', APP), 40013, 'invalid appid')
})

t.test('busyonce-<id>: system error first, success second, then spent', async (t) => {
  const { base } = await start(t)
  assertError(t, await login(base, 'busyonce-a'), -1, 'system error')
  t.match((await login(base, 'busyonce-a')).json.openid, /^o/)
  assertError(t, await login(base, 'busyonce-a'), 40163, 'code been used')
  assertError(t, await login(base, 'busyonce-b'), -1, 'system error')
})

t.test('html-<id> is a 502 HTML page; empty-<id> is an empty 200', async (t) => {
  const { base } = await start(t)
  const html = await login(base, 'html-1')
  t.equal(html.status, 502)
  t.equal(html.type, 'text/html')
  t.match(html.text, /<title>502 Bad Gateway<\/title>/)
  const empty = await login(base, 'empty-1')
  t.equal(empty.status, 200)
  t.equal(empty.type, 'text/plain')
  t.equal(empty.text, '')
})

t.test('slow<ms>-<id> answers only after the delay, then succeeds', async (t) => {
  const { base, emu } = await start(t)
  let answered = false
  const sent = performance.now()
  const slow = login(base, 'slow1000-a').then((a) => { answered = true; return a })
  while (emu.calls === 0) await sleep(5)
  t.notOk(answered, 'received, not answered yet')
  const a = await slow
  t.ok(performance.now() - sent >= 990, 'answered after the delay')
  t.match(a.json.openid, /^o/)
  assertError(t, await login(base, 'slow1000-a'), 40163, 'code been used')
})

t.test('close() does not wait for a pending slow answer', async (t) => {
  const emu = createWeChatEmulator({ apps: [APP] })
  const base = await emu.listen()
  const pending = login(base, 'slow60000-x').catch((err: Error) => err)
  while (emu.calls === 0) await sleep(5) // the request is in, its answer pending
  await emu.close()
  t.type(await pending, Error, 'the open request was dropped')
})

t.test('other paths are 404 text/plain JSON', async (t) => {
  const { base, emu } = await start(t)
  const a = await get(`${base}/cgi-bin/token`)
  t.equal(a.status, 404)
  t.equal(a.type, 'text/plain')
  t.equal(a.json.errcode, -1)
  t.equal(emu.calls, 0, 'not counted as a code2Session call')
})

t.test('the logger sees each request but never the secret or session_key', async (t) => {
  const lines: string[] = []
  const { base } = await start(t, { apps: [APP], logger: { info: (obj, msg) => lines.push(JSON.stringify({ ...obj, msg })) } })
  const ok = await login(base, 'logged')
  await login(base, 'c', { appId: APP.appId, secret: 'wrong-secret' })
  t.equal(lines.length, 2)
  const all = lines.join('\n')
  t.notMatch(all, APP.secret)
  t.notMatch(all, 'wrong-secret')
  t.notMatch(all, String(ok.json.session_key))
})
