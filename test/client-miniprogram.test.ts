/**
 * wegate-miniprogram (client/miniprogram, loaded from its built dist/) against
 * a real wegate, the WeChat emulator and a real Redis, on four platform shapes:
 * native wx (callbacks), Taro (promises + callbacks, connectSocket resolving to
 * the task), uni-app on Vue 3 and a promise-only uni wrapper on Vue 2 (`[err, res]`).
 * Each one runs the same suite: first login, relaunch, one refresh for ten
 * expired callers, re-login after reuse / revocation, local expiry, logout,
 * foreign hosts, WebSocket, used and refused login codes.
 */
import t, { type Test } from 'tap'
import { bearer, get, post } from './helpers/auth.js'
import { loadClient, metricSum, startClientStack } from './helpers/client-stack.js'
import { createWx, taroFrom, uniFrom, type WxShim } from './helpers/miniprogram.js'

const { createClient, WegateError } = loadClient()
const stack = await startClientStack(t)
const MIN = 60_000

type Flavour = 'wx' | 'taro' | 'uni' | 'uni-vue2'
const platformFor = (flavour: Flavour, wx: WxShim): any => {
  if (flavour === 'taro') return taroFrom(wx)
  if (flavour === 'uni') return uniFrom(wx)
  if (flavour === 'uni-vue2') return uniFrom(wx, { vue2: true, callbacksIgnored: true })
  return wx
}

/** A "launch" of the mini program: a platform on the given storage and a client with a movable phone clock. */
function launch (flavour: Flavour, user: string, storage?: Map<string, string>) {
  const wx = createWx(`${flavour}.${user}`.replace(/-/g, '_'), storage) // u-<name>-<n>: no '-' in the name
  const phone = { offset: 0 }
  const events = { login: [] as unknown[], logout: [] as any[], authError: [] as any[] }
  const client = createClient({
    baseUrl: stack.url,
    wx: platformFor(flavour, wx),
    now: () => Date.now() + phone.offset,
    onLogin: (s) => events.login.push(s),
    onLogout: (e) => events.logout.push(e),
    onAuthError: (e) => events.authError.push(e)
  })
  return { wx, client, phone, events }
}

const refreshesSent = (wx: WxShim) => wx.sent.filter((s) => s.url.endsWith('/auth/refresh')).length
const loginsSent = (wx: WxShim) => wx.sent.filter((s) => s.url.endsWith('/auth/login')).length
const refreshes = async () => await metricSum(stack.adminUrl, 'wegate_refreshes_total')
const logins = async () => await metricSum(stack.adminUrl, 'wegate_logins_total')

async function suite (t: Test, flavour: Flavour): Promise<void> {
  t.test('first request logs in, carries the token, keeps the session in storage', async (t) => {
    const { wx, client, events } = launch(flavour, 'first')
    const res = await client.request({ url: '/api/orders', method: 'POST', data: { item: 42 } })
    t.equal(res.statusCode, 200)
    t.equal(res.data.method, 'POST')
    t.same(JSON.parse(res.data.body), { item: 42 }, 'JSON body delivered')
    const session = client.session()
    t.ok(session?.openid)
    t.equal(res.data.headers['x-openid'], session?.openid, 'the gateway accepted the token and set X-OpenID')
    t.same(wx.sent.map((s) => new URL(s.url).pathname), ['/auth/login', '/api/orders'])
    t.equal(wx.sent[1].header.Authorization, `Bearer ${session?.accessToken}`)
    t.equal(events.login.length, 1, 'onLogin once')
    t.ok(wx.storage.get('wegate.session'), 'stored under the default key')
    t.same(await client.login(), session, 'login() with a live session does not call wx.login again')
    t.equal(wx.codes.length, 1)
  })

  t.test('relaunch: a new client on the same storage uses the stored tokens', async (t) => {
    const first = launch(flavour, 'relaunch')
    await first.client.login()
    const before = await logins()
    const again = launch(flavour, 'relaunch', first.wx.storage)
    const res = await again.client.request({ url: '/api/me' })
    t.equal(res.statusCode, 200)
    t.equal(again.wx.codes.length, 0, 'no wx.login after a relaunch')
    t.equal(await logins() - before, 0)
    t.equal(res.data.headers['x-openid'], first.client.session()?.openid)
  })

  t.test('ten requests with an access token the gateway says expired: one /auth/refresh, ten successes', async (t) => {
    const { wx, client } = launch(flavour, 'ten')
    await client.login()
    const before = await refreshes()
    stack.advance(16 * MIN) // the gateway's clock past accessTtl (15m); the phone's clock still believes the token
    const all = await Promise.all(Array.from({ length: 10 }, async (_, i) => await client.request({ url: `/api/n/${i}` })))
    t.same(all.map((r) => r.statusCode), Array(10).fill(200), 'ten successes')
    t.equal(refreshesSent(wx), 1, 'one refresh sent')
    t.equal(await refreshes() - before, 1, 'one refresh at the gateway')
    t.equal(loginsSent(wx), 1, 'no re-login')
    t.equal(wx.sent.filter((s) => s.url.includes('/api/n/')).length, 20, 'each request sent twice: 401 20004, then the retry')
  })

  t.test('ten requests when the phone knows the token expired: one refresh first, no 401', async (t) => {
    const { wx, client, phone } = launch(flavour, 'ten-local')
    await client.login()
    phone.offset += 15 * MIN
    const all = await Promise.all(Array.from({ length: 10 }, async () => await client.request({ url: '/api/x' })))
    t.same(all.map((r) => r.statusCode), Array(10).fill(200))
    t.equal(refreshesSent(wx), 1)
    t.equal(wx.sent.filter((s) => s.url.endsWith('/api/x')).length, 10, 'no request was refused first')
  })

  t.test('refresh token reused (someone else spent it): the session ends, one re-login, success', async (t) => {
    const { wx, client, phone, events } = launch(flavour, 'reuse')
    const first = await client.login()
    t.equal((await post(stack.url + '/auth/refresh', { refreshToken: first.refreshToken })).status, 200, 'the thief rotates first')
    phone.offset += 15 * MIN
    const res = await client.request({ url: '/api/after-reuse' })
    t.equal(res.statusCode, 200)
    t.equal(refreshesSent(wx), 1)
    t.equal(loginsSent(wx), 2, 'one re-login')
    t.match(events.logout, [{ reason: 'ended', code: 20011, openid: first.openid }])
    t.equal(events.authError.length, 0, 'recovered: no auth error for the app')
    t.not(client.session()?.refreshToken, first.refreshToken)
  })

  t.test('access token revoked (its session logged out elsewhere): one re-login, success', async (t) => {
    const { wx, client, events } = launch(flavour, 'revoked')
    const s = await client.login()
    t.equal((await post(stack.url + '/auth/logout', {}, bearer(s.accessToken))).json?.code, 200)
    const res = await client.request({ url: '/api/after-revoke' })
    t.equal(res.statusCode, 200)
    t.equal(loginsSent(wx), 2)
    t.equal(refreshesSent(wx), 0, 'a revoked token is not refreshed')
    t.match(events.logout, [{ reason: 'ended', code: 20006 }])
  })

  t.test('refresh token revoked (session logged out elsewhere, access token due): 20010 → one re-login, success', async (t) => {
    const { wx, client, phone, events } = launch(flavour, 'refreshrevoked')
    const s = await client.login()
    t.equal((await post(stack.url + '/auth/logout', {}, bearer(s.accessToken))).json?.code, 200)
    phone.offset += 15 * MIN
    t.equal((await client.request({ url: '/api/after-refresh-revoked' })).statusCode, 200)
    t.equal(refreshesSent(wx), 1)
    t.equal(loginsSent(wx), 2)
    t.match(events.logout, [{ reason: 'ended', code: 20010 }])
  })

  t.test('logged out everywhere from another phone (logout-all): one re-login, success', async (t) => {
    const { wx, client, events } = launch(flavour, 'everywhere')
    await client.login()
    const other = launch(flavour, 'everywhere') // same user, another phone
    const o = await other.client.login()
    t.same(await other.client.logout({ all: true }), { revoked: true })
    stack.advance(1000) // logout-all ends what was issued up to its second: the re-login is a second later
    const res = await client.request({ url: '/api/after-logout-all' })
    t.equal(res.statusCode, 200)
    t.equal(loginsSent(wx), 2)
    t.match(events.logout, [{ reason: 'ended', code: 20006, openid: o.openid }])
  })

  t.test('refresh token near its end is rotated before it expires; past its end, a login without /auth/refresh', async (t) => {
    const { wx, client, phone } = launch(flavour, 'near')
    const s = await client.login()
    phone.offset += (s.refreshExpiresAt - s.receivedAt) - 5 * MIN
    t.equal((await client.request({ url: '/api/near' })).statusCode, 200)
    t.equal(refreshesSent(wx), 1, 'rotated while still valid')
    t.equal(loginsSent(wx), 1)
    const r = client.session()
    phone.offset += (r!.refreshExpiresAt - r!.receivedAt) + 1000
    t.equal((await client.request({ url: '/api/past' })).statusCode, 200)
    t.equal(refreshesSent(wx), 1, 'an expired refresh token is not sent')
    t.equal(loginsSent(wx), 2)
  })

  t.test('phone clock hours off the server: expiry follows the server expiresIn, no spurious refresh', async (t) => {
    const { wx, client, phone } = launch(flavour, 'skew')
    phone.offset = -3 * 3600_000
    await client.login()
    phone.offset += 10 * MIN
    t.equal((await client.request({ url: '/api/skew' })).statusCode, 200)
    t.equal(refreshesSent(wx), 0)
  })

  t.test('logout: the gateway revokes the session, storage is emptied, the next request logs in', async (t) => {
    const { wx, client, events } = launch(flavour, 'logout')
    const s = await client.login()
    t.same(await client.logout(), { revoked: true })
    t.equal(wx.storage.has('wegate.session'), false)
    t.equal(client.session(), null)
    t.match(events.logout, [{ reason: 'logout', openid: s.openid }])
    const old = await get(stack.url + '/api/me', bearer(s.accessToken))
    t.equal(old.json?.code, 20006, 'the old access token is revoked')
    t.equal((await post(stack.url + '/auth/refresh', { refreshToken: s.refreshToken })).json?.code, 20010, 'and its refresh token')
    t.equal((await client.request({ url: '/api/me' })).statusCode, 200)
    t.equal(loginsSent(wx), 2)
  })

  t.test('logout all: every session of the user ends', async (t) => {
    const a = launch(flavour, 'all')
    const b = launch(flavour, 'all')
    await a.client.login()
    const bs = await b.client.login()
    t.same(await a.client.logout({ all: true }), { revoked: true })
    t.match(a.events.logout, [{ reason: 'logout-all' }])
    t.equal((await get(stack.url + '/api/me', bearer(bs.accessToken))).json?.code, 20006, 'the other phone is logged out too')
  })

  t.test('foreign absolute URLs never get the token', async (t) => {
    const { wx, client } = launch(flavour, 'foreign')
    const before = stack.foreign.received.length
    const res = await client.request({ url: stack.foreign.url + '/collect', header: { 'x-mine': '1' } })
    t.equal(res.statusCode, 200)
    t.equal(wx.codes.length, 0, 'no login for a foreign host')
    await client.login()
    await client.request({ url: stack.foreign.url + '/collect' })
    const host = new URL(stack.url).host
    await client.request({ url: `http://${host}@${new URL(stack.foreign.url).host}/userinfo` })
    const seen = stack.foreign.received.slice(before)
    t.equal(seen.length, 3)
    t.same(seen.map((r) => r.headers.authorization), [undefined, undefined, undefined])
    t.equal(seen[0].headers['x-mine'], '1', 'the caller headers still go')
    const own = await client.request({ url: stack.url + '/api/absolute' })
    t.equal(own.data.headers['x-openid'], client.session()?.openid, 'an absolute URL to the gateway does')
  })

  t.test('WebSocket through wegate with the token', async (t) => {
    const { client } = launch(flavour, 'socket')
    const task = await client.connectSocket({ url: '/ws/chat' })
    const reply = await new Promise<string>((resolve, reject) => {
      task.onError((e: unknown) => reject(new Error(JSON.stringify(e))))
      task.onMessage((m) => resolve(String(m.data)))
      task.onOpen(() => task.send({ data: 'hi' }))
    })
    t.equal(reply, 'ws:hi')
    t.equal(stack.handshakes.at(-1)?.headers['x-openid'], client.session()?.openid)
    task.close({})
  })

  t.test('a login code WeChat calls used is never sent again: a fresh wx.login', async (t) => {
    const { wx, client } = launch(flavour, 'used')
    const used = `err40163-${flavour}`
    wx.queue.push(used)
    await client.login()
    t.equal(wx.codes.length, 2)
    t.equal(stack.emulator.codes.filter((c) => c === used).length, 1, 'the used code reached WeChat once')
  })

  t.test('WeChat refuses the user (40226): 10003, onAuthError once, no retry', async (t) => {
    const { wx, client, events } = launch(flavour, 'risky')
    wx.queue.push(`err40226-${flavour}`)
    const err = await client.request({ url: '/api/me' }).catch((e: unknown) => e)
    t.ok(err instanceof WegateError)
    t.match(err, { code: 10003, statusCode: 403 })
    t.equal(wx.codes.length, 1)
    t.equal(events.authError.length, 1)
  })

  t.test('a login and requests at once on an empty session: one wx.login, one /auth/login', async (t) => {
    const { wx, client } = launch(flavour, 'together')
    const [session, ...all] = await Promise.all([client.login(), ...Array.from({ length: 5 }, async () => await client.request({ url: '/api/t' }))])
    t.same(all.map((r) => r.statusCode), Array(5).fill(200))
    t.equal(wx.codes.length, 1)
    t.equal(loginsSent(wx), 1)
    t.equal(all[0].data.headers['x-openid'], session.openid)
  })

  t.test('a refused user with ten requests waiting: one login attempt, ten rejections, onAuthError once', async (t) => {
    const { wx, client, events } = launch(flavour, 'refused')
    wx.queue.push(`err40226-${flavour}-ten`)
    const all = await Promise.all(Array.from({ length: 10 }, async () => await client.request({ url: '/api/r' }).catch((e: unknown) => e)))
    t.same(all.map((e: any) => e.code), Array(10).fill(10003))
    t.equal(wx.codes.length, 1)
    t.equal(events.authError.length, 1)
  })

  t.test('a login answer lost on the way: sent again with the same code, the gateway answers the same session', async (t) => {
    const { wx, client } = launch(flavour, 'lost')
    wx.lose.push('/auth/login')
    const s = await client.login()
    t.equal(wx.codes.length, 1, 'no second wx.login')
    t.equal(loginsSent(wx), 2)
    t.equal(stack.emulator.codes.filter((c) => c === wx.codes[0]).length, 1, 'WeChat saw the code once')
    t.equal((await client.request({ url: '/api/lost' })).data.headers['x-openid'], s.openid)
  })

  t.test('other errors are the caller\'s, as the gateway answered', async (t) => {
    const { client } = launch(flavour, 'other')
    const res = await client.request({ url: '/nowhere' })
    t.equal(res.statusCode, 404)
    t.equal(res.data.code, 30004)
  })
}

for (const flavour of ['wx', 'taro', 'uni', 'uni-vue2'] as const) {
  t.test(flavour, async (t) => { await suite(t, flavour) })
}
