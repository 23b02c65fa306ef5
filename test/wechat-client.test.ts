import { createServer, type RequestListener } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import t, { type Test } from 'tap'
import { createWeChatClient, WeChatError, type WeChatClientOptions } from '../src/auth/wechat.js'
import { createWeChatEmulator } from '../src/emulator/wechat.js'

const APP = { appId: 'wxclienttest00001', secret: 'sup3r-s3cret-value' }
const RID = /^[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$/

const emulator = createWeChatEmulator({ apps: [APP] })
const emuUrl = await emulator.listen({ port: 0 })
t.teardown(() => emulator.close())

/** A client whose pino output lands in `lines` (one parsed object per line). */
function client (t: Test, opts: Partial<WeChatClientOptions> = {}) {
  const raw: string[] = []
  const logger = pino({ level: 'debug' }, { write: (s: string) => { raw.push(s) } })
  const c = createWeChatClient({ baseUrl: emuUrl, timeoutMs: 2000, retries: 2, logger, random: () => 0, ...opts })
  t.teardown(() => c.close())
  return {
    c,
    raw,
    lines: () => raw.map((s) => JSON.parse(s) as Record<string, unknown>)
  }
}

/** Run a call that must fail and return its WeChatError. */
async function failure (t: Test, p: Promise<unknown>): Promise<WeChatError> {
  const err = await p.then(() => null, (e: unknown) => e)
  t.type(err, WeChatError)
  const e = err as WeChatError
  t.equal(e.data, null, 'data is null')
  return e
}

/** Calls the emulator receives while `fn` runs. */
async function callsDuring (fn: () => Promise<unknown>): Promise<number> {
  const before = emulator.calls
  await fn()
  return emulator.calls - before
}

/** A throwaway HTTP server for answers the emulator does not give. */
async function rawServer (t: Test, handler: RequestListener): Promise<{ url: string, hits: () => number }> {
  let hits = 0
  const s = createServer((req, res) => { hits++; handler(req, res) })
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { s.closeAllConnections(); s.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, hits: () => hits }
}

t.test('a code becomes openid + session_key; no unionid when WeChat sends none', async (t) => {
  const { c } = client(t)
  const s = await c.code2Session(APP, 'plain-code-1')
  t.match(s.openid, /^o[A-Za-z0-9_-]{27}$/)
  t.equal(Buffer.from(s.sessionKey, 'base64').length, 16)
  t.notOk('unionid' in s)
})

t.test('unionid is passed on, and the same user logs in twice with new codes', async (t) => {
  const { c } = client(t)
  const a = await c.code2Session(APP, 'u-alice-1')
  const b = await c.code2Session(APP, 'u-alice-2')
  t.match(a.unionid, /^o/)
  t.equal(a.openid, b.openid)
  t.equal(a.unionid, b.unionid)
})

t.test('a base URL with a trailing slash works', async (t) => {
  const { c } = client(t, { baseUrl: emuUrl + '/' })
  t.match((await c.code2Session(APP, 'slash-1')).openid, /^o/)
})

t.test('WeChat errcodes map to catalog errors, without retries, with errcode and rid', async (t) => {
  const cases: Array<[string, string, number, number]> = [
    ['err40029-a', 'WECHAT_CODE_INVALID', 401, 40029],
    ['err40163-a', 'WECHAT_CODE_USED', 401, 40163],
    ['err40226-a', 'WECHAT_USER_RISKY', 403, 40226],
    ['err45011-a', 'WECHAT_QUOTA', 503, 45011],
    ['err40002-a', 'WECHAT_BAD_RESPONSE', 502, 40002],
    ['err48001-a', 'WECHAT_BAD_RESPONSE', 502, 48001]
  ]
  for (const [code, name, status, errcode] of cases) {
    const { c } = client(t)
    let err: WeChatError | undefined
    const calls = await callsDuring(async () => { err = await failure(t, c.code2Session(APP, code)) })
    t.equal(err?.errorName, name, code)
    t.equal(err?.statusCode, status)
    t.equal(err?.wechat.errcode, errcode)
    t.equal(err?.wechat.kind, 'errcode')
    t.match(err?.wechat.rid, RID, 'rid parsed out of errmsg')
    t.equal(err?.wechat.attempts, 1)
    t.equal(calls, 1, `${code} is not retried`)
  }
})

t.test('quota: 503 with Retry-After: 60', async (t) => {
  const { c } = client(t)
  const err = await failure(t, c.code2Session(APP, 'err45011-b'))
  t.equal(err.code, 50002)
  t.same(err.headers, { 'Retry-After': '60' })
})

t.test('a code used twice: WECHAT_CODE_USED the second time', async (t) => {
  const { c } = client(t)
  await c.code2Session(APP, 'twice-1')
  const err = await failure(t, c.code2Session(APP, 'twice-1'))
  t.equal(err.errorName, 'WECHAT_CODE_USED')
  t.equal(err.code, 10002)
})

t.test('an empty code: WeChat says 41008, the client gets WECHAT_CODE_INVALID', async (t) => {
  const { c } = client(t)
  const err = await failure(t, c.code2Session(APP, ''))
  t.equal(err.errorName, 'WECHAT_CODE_INVALID')
  t.equal(err.wechat.errcode, 41008)
})

t.test('wrong AppSecret: 503 MISCONFIGURED and an error log telling the operator what to fix, without the secret', async (t) => {
  const { c, raw, lines } = client(t)
  const wrong = { appId: APP.appId, secret: 'the-wrong-secret-xyz' }
  const calls = await callsDuring(async () => {
    const err = await failure(t, c.code2Session(wrong, 'misconf-1'))
    t.equal(err.errorName, 'WECHAT_MISCONFIGURED')
    t.equal(err.statusCode, 503)
    t.equal(err.wechat.errcode, 40125)
  })
  t.equal(calls, 1, 'not retried')
  const line = lines().find((l) => l.level === 50)
  t.ok(line, 'an error-level line')
  t.match(line?.msg, `AppSecret of app ${APP.appId}`)
  t.match(line?.msg, 'wechat.apps[].secret')
  t.match(line?.rid, RID)
  t.notMatch(raw.join(''), wrong.secret)
})

t.test('unknown appId: 503 MISCONFIGURED and an error log naming wechat.apps[].appId', async (t) => {
  const { c, lines } = client(t)
  const err = await failure(t, c.code2Session({ appId: 'wxnotregistered01', secret: 'x-secret' }, 'misconf-2'))
  t.equal(err.errorName, 'WECHAT_MISCONFIGURED')
  t.equal(err.wechat.errcode, 40013)
  const line = lines().find((l) => l.level === 50)
  t.match(line?.msg, 'wxnotregistered01')
  t.match(line?.msg, 'wechat.apps[].appId')
})

t.test('errcode -1 once is retried and the login succeeds', async (t) => {
  const { c, lines } = client(t)
  const calls = await callsDuring(async () => {
    t.match((await c.code2Session(APP, 'busyonce-1')).openid, /^o/)
  })
  t.equal(calls, 2)
  const warn = lines().find((l) => l.level === 40)
  t.equal(warn?.errcode, -1)
  t.match(warn?.rid, RID, 'the rid of the busy answer is logged')
})

t.test('errcode -1 every time: 503 WECHAT_UNAVAILABLE after retries + 1 attempts', async (t) => {
  const { c } = client(t, { retries: 2 })
  const calls = await callsDuring(async () => {
    const err = await failure(t, c.code2Session(APP, 'err-1-a'))
    t.equal(err.errorName, 'WECHAT_UNAVAILABLE')
    t.equal(err.statusCode, 503)
    t.equal(err.wechat.errcode, -1)
    t.equal(err.wechat.attempts, 3)
  })
  t.equal(calls, 3)
})

t.test('retries: 0 means one attempt', async (t) => {
  const { c } = client(t, { retries: 0 })
  const calls = await callsDuring(() => failure(t, c.code2Session(APP, 'err-1-b')))
  t.equal(calls, 1)
})

t.test('no answer in time: 504 WECHAT_TIMEOUT after retries + 1 attempts', async (t) => {
  const { c } = client(t, { timeoutMs: 150, retries: 1 })
  const calls = await callsDuring(async () => {
    const err = await failure(t, c.code2Session(APP, 'slow5000-a'))
    t.equal(err.errorName, 'WECHAT_TIMEOUT')
    t.equal(err.statusCode, 504)
    t.equal(err.wechat.kind, 'timeout')
    t.equal(err.wechat.errcode, null)
    t.equal(err.wechat.attempts, 2)
  })
  t.equal(calls, 2)
})

t.test('a slow answer within the timeout succeeds', async (t) => {
  const { c } = client(t, { timeoutMs: 3000 })
  t.match((await c.code2Session(APP, 'slow100-a')).openid, /^o/)
})

t.test('connection refused: 503 WECHAT_UNAVAILABLE', async (t) => {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  const { c } = client(t, { baseUrl: `http://127.0.0.1:${port}`, retries: 1 })
  const err = await failure(t, c.code2Session(APP, 'refused-1'))
  t.equal(err.errorName, 'WECHAT_UNAVAILABLE')
  t.equal(err.statusCode, 503)
  t.equal(err.wechat.kind, 'network')
  t.equal(err.wechat.attempts, 2, 'retried')
})

t.test('a connection reset is retried', async (t) => {
  let first = true
  const srv = await rawServer(t, (req, res) => {
    if (first) {
      first = false
      req.socket.destroy()
      return
    }
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end(JSON.stringify({ session_key: 'AAAAAAAAAAAAAAAAAAAAAA==', openid: 'oResetRetry000000000000000000' }))
  })
  const { c } = client(t, { baseUrl: srv.url })
  t.equal((await c.code2Session(APP, 'reset-1')).openid, 'oResetRetry000000000000000000')
  t.equal(srv.hits(), 2)
})

t.test('HTML 502 from a proxy: WECHAT_BAD_RESPONSE, not retried, detail for the operator', async (t) => {
  const { c } = client(t)
  const calls = await callsDuring(async () => {
    const err = await failure(t, c.code2Session(APP, 'html-1'))
    t.equal(err.errorName, 'WECHAT_BAD_RESPONSE')
    t.equal(err.statusCode, 502)
    t.match(err.detail, /HTTP 502 \(text\/html\).*502 Bad Gateway/)
    t.equal(err.message, 'WeChat answered with something unexpected', 'the client sees only the catalog message')
  })
  t.equal(calls, 1)
})

t.test('empty 200 body: WECHAT_BAD_RESPONSE', async (t) => {
  const { c } = client(t)
  const err = await failure(t, c.code2Session(APP, 'empty-1'))
  t.equal(err.errorName, 'WECHAT_BAD_RESPONSE')
  t.equal(err.wechat.kind, 'bad_response')
})

t.test('garbage answers: WECHAT_BAD_RESPONSE, whatever the Content-Type', async (t) => {
  const bodies: Array<[number, string, string]> = [
    [200, 'text/plain', 'hello'],
    [200, 'application/json', '[1,2]'],
    [200, 'application/json', 'null'],
    [200, 'text/plain', '{"foo":1}'],
    [200, 'text/plain', '{"openid":"oX","session_key":42}'],
    [200, 'text/plain', 'x'.repeat(100_000)],
    [500, 'application/json', '{"errcode":-1,"errmsg":"system error"}']
  ]
  let i = 0
  const srv = await rawServer(t, (_req, res) => {
    const [status, type, body] = bodies[i++]!
    res.writeHead(status, { 'content-type': type })
    res.end(body)
  })
  const { c } = client(t, { baseUrl: srv.url })
  for (const [status, , body] of bodies) {
    const err = await failure(t, c.code2Session(APP, 'garbage'))
    t.equal(err.errorName, 'WECHAT_BAD_RESPONSE', `${status} ${body.slice(0, 30)}`)
  }
  t.equal(srv.hits(), bodies.length, 'none retried')
})

t.test('JSON parsed whatever the Content-Type (application/json works too)', async (t) => {
  const srv = await rawServer(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' })
    res.end(JSON.stringify({ session_key: 'BBBBBBBBBBBBBBBBBBBBBB==', openid: 'oJson0000000000000000000000000', unionid: 'oUnion' }))
  })
  const { c } = client(t, { baseUrl: srv.url })
  t.same(await c.code2Session(APP, 'json-1'), { openid: 'oJson0000000000000000000000000', sessionKey: 'BBBBBBBBBBBBBBBBBBBBBB==', unionid: 'oUnion' })
})

t.test('log lines never hold the secret, the code, session_key or the URL', async (t) => {
  const { c, raw } = client(t, { timeoutMs: 150, retries: 1 })
  const keys: string[] = []
  const codes = ['u-logcheck-Zq81', 'busyonce-Zq82', 'err40029-Zq83', 'err-1-Zq84', 'html-Zq85', 'slow5000-Zq86']
  for (const code of codes) {
    try {
      keys.push((await c.code2Session(APP, code)).sessionKey)
    } catch {}
  }
  await c.code2Session({ appId: APP.appId, secret: 'another-wrong-secret' }, 'x-Zq87').catch(() => {})
  t.equal(keys.length, 2)
  const all = raw.join('')
  t.ok(raw.length >= codes.length, 'there are log lines to check')
  t.notMatch(all, APP.secret)
  t.notMatch(all, 'another-wrong-secret')
  t.notMatch(all, /Zq8\d/, 'no code')
  t.notMatch(all, 'jscode2session', 'no URL')
  for (const k of keys) t.notMatch(all, k, 'no session_key')
})

t.test('after close(), calls fail with WECHAT_UNAVAILABLE and are not retried', async (t) => {
  const { c } = client(t)
  await c.close()
  const calls = await callsDuring(async () => {
    const err = await failure(t, c.code2Session(APP, 'closed-1'))
    t.equal(err.errorName, 'WECHAT_UNAVAILABLE')
    t.equal(err.wechat.attempts, 1)
  })
  t.equal(calls, 0)
})
