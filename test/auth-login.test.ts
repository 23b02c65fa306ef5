/**
 * POST /auth/login end to end: real gateway, real Redis, the WeChat emulator,
 * and an echo upstream behind a required-auth route.
 */
import t from 'tap'
import { APP_A, APP_B, authConfig, bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'

const redis = await redisFor(t)
const wx = await startWeChat(t, [APP_A, APP_B])
const echoUrl = await startEcho(t)
const { gateway, url, adminUrl, logs } = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url })

const PAIR_KEYS = ['accessToken', 'expiresIn', 'openid', 'refreshExpiresIn', 'refreshToken', 'tokenType']

t.test('happy path: the response has exactly the documented shape', async (t) => {
  const a = await post(url + '/auth/login', { code: 'happy-1' })
  t.equal(a.status, 200)
  t.match(a.headers.get('content-type'), /^application\/json/)
  t.same(Object.keys(a.json ?? {}).sort(), ['code', 'data', 'message'])
  t.equal(a.json?.code, 200)
  const d = a.json?.data
  t.same(Object.keys(d).sort(), PAIR_KEYS, 'no unionid when WeChat sent none, and nothing else')
  t.equal(d.tokenType, 'Bearer')
  t.equal(d.expiresIn, 900, '15m default access TTL, in seconds')
  t.ok(d.refreshExpiresIn > 604_700 && d.refreshExpiresIn <= 604_800, '7d default refresh TTL, in seconds')
  t.match(d.openid, /^o[A-Za-z0-9_-]{27}$/)
  t.equal(d.accessToken.split('.').length, 3, 'access token is a JWT')
  t.equal(d.refreshToken.split('.').length, 2, 'refresh token is opaque, never a JWT')
})

t.test('a unionid from WeChat is passed on in the pair', async (t) => {
  const d = await login(url, 'u-carol-1')
  t.same(Object.keys(d).sort(), [...PAIR_KEYS, 'unionid'].sort())
  t.match(d.unionid, /^o[A-Za-z0-9_-]{27}$/)
  const again = await login(url, 'u-carol-2')
  t.equal(again.openid, d.openid, 'same user, new code: same openid')
  t.not(again.refreshToken, d.refreshToken, 'a new login is a new session')
})

t.test('the access token opens a required-auth route; upstream learns who the caller is', async (t) => {
  const d = await login(url, 'u-dave-1')
  const anon = await get(url + '/api/whoami')
  t.equal(anon.status, 401)
  t.equal(anon.json?.code, 20001)

  const res = await fetch(url + '/api/whoami', {
    headers: { ...bearer(d.accessToken), 'x-openid': 'oSpoofed', 'X-AppID': 'wxevil', 'x-unionid': 'oEvil' }
  })
  t.equal(res.status, 200)
  const seen = await res.json() as { headers: Record<string, string> }
  t.equal(seen.headers['x-openid'], d.openid, 'X-OpenID from the token, the client copy dropped')
  t.equal(seen.headers['x-unionid'], d.unionid)
  t.equal(seen.headers['x-appid'], APP_A.appId)
  t.ok(seen.headers['x-request-id'], 'X-Request-Id set')
  t.notOk(seen.headers.authorization, 'the bearer token is not forwarded by default')

  const plain = await login(url, 'no-union-1')
  const res2 = await fetch(url + '/api/whoami', { headers: { ...bearer(plain.accessToken), 'x-unionid': 'oEvil', 'X-UNIONID': 'oEvil2' } })
  const seen2 = await res2.json() as { headers: Record<string, string> }
  t.equal(seen2.headers['x-openid'], plain.openid)
  t.notOk('x-unionid' in seen2.headers, 'no X-UnionID for a user without one, and the client\'s copies are gone')
})

t.test('session_key never appears in a response, a token or a log line; it is kept in the store', async (t) => {
  const before = wx.sessionKeys.length
  const bodies: string[] = []
  for (const code of ['sk-1', 'u-erin-1', 'u-erin-2']) {
    const a = await post(url + '/auth/login', { code })
    t.equal(a.status, 200)
    bodies.push(a.text)
    const d = a.json?.data
    // The JWT payload is only base64url: decode it so a session_key inside would show.
    bodies.push(Buffer.from(d.accessToken.split('.')[1], 'base64url').toString('utf8'))
    const r = await post(url + '/auth/refresh', { refreshToken: d.refreshToken })
    bodies.push(r.text)
  }
  const keys = wx.sessionKeys.slice(before)
  t.equal(keys.length, 3, 'the recorder saw three session_keys from the emulator')
  const erin = await login(url, 'u-erin-3')
  const latest = wx.sessionKeys.at(-1) as string
  t.equal(await gateway.store.getSessionKey(APP_A.appId, erin.openid), latest, 'kept server-side per (appId, openid), latest login wins')
  keys.push(latest)
  const logText = logs.text()
  t.ok(logs.raw.length > 10, 'there are log lines to search')
  for (const k of keys) {
    for (const b of bodies) t.notOk(b.includes(k), 'not in a response or token')
    t.notOk(logText.includes(k), 'not in a log line')
    // The base64url spelling too, in case something re-encoded it.
    t.notOk(logText.includes(Buffer.from(k, 'base64').toString('base64url')), 'not in a log line (base64url)')
  }
  t.notOk(/session_?key/i.test(logText), 'no log field even named session_key')
})

t.test('no token is ever logged', async (t) => {
  const d = await login(url, 'nolog-1')
  await get(url + '/api/x', bearer(d.accessToken))
  const r = await post(url + '/auth/refresh', { refreshToken: d.refreshToken })
  await post(url + '/auth/logout', {}, bearer(r.json?.data.accessToken))
  const text = logs.text()
  for (const tok of [d.accessToken, d.refreshToken, r.json?.data.accessToken, r.json?.data.refreshToken]) {
    t.notOk(text.includes(tok))
  }
  t.notOk(text.includes(APP_A.secret), 'nor the AppSecret')
})

t.test('each WeChat errcode becomes its catalog error', async (t) => {
  const cases: Array<[string, number, number, number]> = [
    // code, HTTP status, envelope code, errcode label
    ['err40029-a', 401, 10001, 40029],
    ['err41008-a', 401, 10001, 41008],
    ['err40163-a', 401, 10002, 40163],
    ['err40226-a', 403, 10003, 40226],
    ['err45011-a', 503, 50002, 45011],
    ['err40002-a', 502, 50003, 40002],
    ['err40013-a', 503, 50004, 40013],
    ['err40125-a', 503, 50004, 40125],
    ['err99999-a', 502, 50003, 99999]
  ]
  for (const [code, status, envelope, errcode] of cases) {
    const before = await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'failure', errcode: String(errcode) })
    const a = await post(url + '/auth/login', { code })
    t.equal(a.status, status, `${code} → HTTP ${status}`)
    t.equal(a.json?.code, envelope, `${code} → ${envelope}`)
    t.equal(typeof a.json?.message, 'string')
    t.notOk(/rid:|errmsg|errcode/.test(a.text), 'WeChat text is not shown to the client')
    if (errcode === 45011) t.equal(a.headers.get('retry-after'), '60')
    const after = await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'failure', errcode: String(errcode) })
    t.equal(after - before, 1, `wegate_logins_total{errcode="${errcode}"} counted`)
  }
})

t.test('a wrong AppSecret and an appId WeChat does not know are misconfigurations (50004), logged with the config path', async (t) => {
  const echo = await startEcho(t)
  const bad = await startGateway(t, authConfig({
    wechatUrl: wx.url,
    echoUrl: echo,
    patch: { wechat: { baseUrl: wx.url, timeout: '2s', apps: [{ appId: APP_A.appId, secret: 'wrong' }, { appId: 'wxnotatwechatapp', secret: 'x' }] } }
  }))
  const s = await post(bad.url + '/auth/login', { code: 'cfg-1', appId: APP_A.appId })
  t.equal(s.status, 503)
  t.equal(s.json?.code, 50004)
  const i = await post(bad.url + '/auth/login', { code: 'cfg-2', appId: 'wxnotatwechatapp' })
  t.equal(i.json?.code, 50004)
  const text = bad.logs.text()
  t.match(text, /wechat\.apps\[\]\.secret/)
  t.match(text, /wechat\.apps\[\]\.appId/)
  t.notOk(text.includes('"wrong"'), 'the secret itself is not logged')
})

t.test('WeChat text/plain JSON is parsed; HTML and empty bodies are a bad response (50003)', async (t) => {
  // Every emulator answer is text/plain: the happy path above already proves it is parsed.
  const html = await post(url + '/auth/login', { code: 'html-1' })
  t.equal(html.status, 502)
  t.equal(html.json?.code, 50003)
  t.notOk(html.text.includes('nginx'), 'the HTML page is not passed on')
  const empty = await post(url + '/auth/login', { code: 'empty-1' })
  t.equal(empty.status, 502)
  t.equal(empty.json?.code, 50003)
})

t.test('errcode -1 is retried: busy once then success logs in; busy always is 50001 after 1 + retries attempts', async (t) => {
  const calls = wx.emulator.calls
  const d = await login(url, 'busyonce-1')
  t.match(d.openid, /^o/)
  t.equal(wx.emulator.calls - calls, 2, 'one -1, one success')

  const calls2 = wx.emulator.calls
  const a = await post(url + '/auth/login', { code: 'err-1-x' })
  t.equal(a.status, 503)
  t.equal(a.json?.code, 50001)
  t.equal(wx.emulator.calls - calls2, 3, 'wechat.retries: 2 → three attempts')
})

t.test('WeChat timeout → 504 (50005) without hanging; unreachable WeChat → 503 (50001)', async (t) => {
  const echo = await startEcho(t)
  const slow = await startGateway(t, authConfig({ wechatUrl: wx.url, echoUrl: echo, patch: { wechat: { baseUrl: wx.url, timeout: '200ms', retries: 1, apps: [APP_A] } } }))
  const started = Date.now()
  const a = await post(slow.url + '/auth/login', { code: 'slow3000-a' })
  t.comment(`timeout answered after ${Date.now() - started} ms (timeout 200ms × 2 attempts)`)
  t.equal(a.status, 504)
  t.equal(a.json?.code, 50005)
  t.equal(await metric(slow.adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'failure', errcode: 'none' }), 1)

  const down = await startGateway(t, authConfig({ wechatUrl: 'http://127.0.0.1:9', echoUrl: echo, patch: { wechat: { baseUrl: 'http://127.0.0.1:9', retries: 0, apps: [APP_A] } } }))
  const b = await post(down.url + '/auth/login', { code: 'x-1' })
  t.equal(b.status, 503)
  t.equal(b.json?.code, 50001)
})

t.test('several apps: appId is required, an unknown one is refused, each app gets its own openid', async (t) => {
  const echo = await startEcho(t)
  const two = await startAuthGateway(t, {
    wechatUrl: wx.url,
    echoUrl: echo,
    redisUrl: redis.url,
    patch: { wechat: { baseUrl: wx.url, timeout: '2s', apps: [APP_A, APP_B] } }
  })
  const none = await post(two.url + '/auth/login', { code: 'u-frank-1' })
  t.equal(none.status, 400)
  t.equal(none.json?.code, 40002)
  t.match(none.json?.message, /appId/)
  const calls = wx.emulator.calls
  const unknown = await post(two.url + '/auth/login', { code: 'u-frank-2', appId: 'wxnobody' })
  t.equal(unknown.status, 400)
  t.equal(unknown.json?.code, 40002)
  t.equal(wx.emulator.calls, calls, 'an unknown appId never reaches WeChat')

  const a = await login(two.url, 'u-frank-3', APP_A.appId)
  const b = await login(two.url, 'u-frank-4', APP_B.appId)
  t.not(a.openid, b.openid, 'openid is per app')
  t.equal(a.unionid, b.unionid, 'unionid is per user')
  const res = await fetch(two.url + '/api/who', { headers: bearer(b.accessToken) })
  const seen = await res.json() as { headers: Record<string, string> }
  t.equal(seen.headers['x-appid'], APP_B.appId)
  t.equal(seen.headers['x-openid'], b.openid)

  const single = await post(url + '/auth/login', { code: 'u-frank-5', appId: 'wxnobody' })
  t.equal(single.json?.code, 40002, 'with one app, a wrong appId is still refused')
})

t.test('malformed bodies are 4xx envelopes, never reach WeChat', async (t) => {
  const calls = wx.emulator.calls
  const json: Array<[string, unknown]> = [
    ['missing code', {}],
    ['code is a number', { code: 123 }],
    ['code is null', { code: null }],
    ['code is an object', { code: { $ne: 1 } }],
    ['code is empty', { code: '' }],
    ['code longer than 128', { code: 'a'.repeat(129) }],
    ['appId is a number', { code: 'ok-1', appId: 1 }],
    ['an array', ['code']],
    ['a string', 'code'],
    ['a number', 42],
    ['null', null]
  ]
  for (const [what, body] of json) {
    const a = await post(url + '/auth/login', body)
    t.equal(a.status, 400, `${what}: 400`)
    t.equal(a.json?.code, 40001, `${what}: 40001`)
  }
  const raw: Array<[string, string, string, number, number]> = [
    ['broken JSON', 'application/json', '{"code":', 400, 40000],
    ['binary garbage', 'application/json', '\u0000\u00ff\u00fe{{', 400, 40000],
    ['empty JSON body', 'application/json', '', 400, 40000],
    ['text/plain', 'text/plain', '{"code":"abc"}', 415, 40015],
    ['form', 'application/x-www-form-urlencoded', 'code=abc', 415, 40015],
    ['huge body (64 KiB)', 'application/json', JSON.stringify({ code: 'a'.repeat(65536) }), 413, 30013]
  ]
  for (const [what, type, body, status, code] of raw) {
    const a = await post(url + '/auth/login', body, { 'content-type': type }, true)
    t.equal(a.status, status, `${what}: ${status}`)
    t.equal(a.json?.code, code, `${what}: ${code}`)
    t.notOk(/at .*\.ts:|FST_ERR|Unexpected token/.test(a.text), `${what}: no stack or library text`)
  }
  t.equal(wx.emulator.calls, calls, 'WeChat was never called')
})

t.test('GET /auth/login is 405, an unknown /auth path 404', async (t) => {
  const a = await get(url + '/auth/login')
  t.equal(a.status, 405)
  t.equal(a.json?.code, 30005)
  const b = await get(url + '/auth/nothing')
  t.equal(b.status, 404)
})

t.test('concurrent logins with one code share a single WeChat exchange', async (t) => {
  const calls = wx.emulator.calls
  const all = await Promise.all(Array.from({ length: 5 }, () => post(url + '/auth/login', { code: 'slow200-shared' })))
  for (const a of all) t.equal(a.status, 200)
  t.equal(wx.emulator.calls - calls, 1, 'one code2Session call for five logins')
  t.equal(new Set(all.map((a) => a.json?.data.openid)).size, 1)
  t.equal(new Set(all.map((a) => a.json?.data.refreshToken)).size, 1, 'one session: the same token pair for all')
  // A client retrying after the answer (lost response) is served from the same exchange, not 40163.
  const retry = await post(url + '/auth/login', { code: 'slow200-shared' })
  t.equal(retry.status, 200)
  t.equal(retry.json?.data.refreshToken, all[0]?.json?.data.refreshToken, 'the retry gets that same pair')
  t.equal(wx.emulator.calls - calls, 1)
})

t.test('a failed exchange is not remembered: the same code can be retried', async (t) => {
  const before = wx.emulator.calls
  await post(url + '/auth/login', { code: 'err-1-again' })
  await post(url + '/auth/login', { code: 'err-1-again' })
  t.equal(wx.emulator.calls - before, 6, 'both logins reached WeChat (3 attempts each)')
})

t.test('wegate_logins_total counts successes per app', async (t) => {
  const before = await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'success', errcode: '0' })
  await login(url, 'count-1')
  t.equal(await metric(adminUrl, 'wegate_logins_total', { app: APP_A.appId, result: 'success', errcode: '0' }) - before, 1)
})
