/**
 * WeChat web and App logins end to end, over real sockets with a cookie-keeping
 * browser, the emulator's pages and real Redis: the H5 (official account) flow,
 * the website QR flow, the App flow, one X-UnionID across channels, and every
 * way a browser login must fail.
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { bearer, get, post, redisFor, startEcho, type Pair } from './helpers/auth.js'
import { Browser, withQuery } from './helpers/browser.js'
import { startGateway, testClock } from './helpers/gateway.js'
import { freePort } from './helpers/redis.js'

const MP = { appId: 'wxmp00000000000001', secret: 'mp-secret' }
const H5 = { type: 'officialAccount', appId: 'wxh500000000000001', secret: 'h5-secret', redirects: ['https://h5.example.com/shop/'] }
const WEB = { type: 'website', appId: 'wxweb0000000000001', secret: 'web-secret', redirects: ['https://www.example.com/'] }
const APP = { type: 'mobileApp', appId: 'wxapp0000000000001', secret: 'app-secret' }
const SHOP = 'https://h5.example.com/shop/'

const redis = await redisFor(t)
const emulator = createWeChatEmulator({ apps: [MP, H5, WEB, APP] })
const wechatUrl = await emulator.listen()
t.teardown(() => emulator.close())
const echoUrl = await startEcho(t)
const canaryUrl = await startEcho(t)
/** The emulator's openid of a test user in an app (docs/emulator.md: a hash of appid and name). */
const openidOf = (appId: string, user: string) => 'o' + createHash('sha256').update(`openid\0${appId}\0user:${user}`).digest('base64url').slice(0, 27)
const clock = testClock()
const port = await freePort()
const gw = await startGateway(t, {
  listen: { host: '127.0.0.1', port },
  publicUrl: `http://127.0.0.1:${port}`,
  store: { type: 'redis', url: redis.url },
  wechat: { baseUrl: wechatUrl, openBaseUrl: wechatUrl, timeout: '2s', retries: 1, apps: [MP, H5, WEB, APP] },
  rateLimits: { login: { max: 100000, window: '1m', by: 'ip' } },
  routes: [
    { name: 'echo', prefix: '/api', auth: 'required', upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] },
    // erin is a tester through the H5 page only: canary.openids lists her H5 openid
    {
      name: 'grey',
      prefix: '/grey',
      auth: 'required',
      upstreams: [{ name: 'stable', url: echoUrl, weight: 1 }, { name: 'canary', url: canaryUrl, weight: 0 }],
      canary: { sticky: 'openid', openids: [openidOf(H5.appId, 'erin')], upstream: 'canary' }
    }
  ]
}, { now: clock.now })
await gw.gateway.store.ready(5000)
const base = gw.url

const authorizeUrl = (appId: string, redirect: string, extra = '') =>
  `${base}/auth/wechat/authorize?appId=${appId}&redirect=${encodeURIComponent(redirect)}${extra}`

/** authorize → WeChat's page (as `user`, or refusing) → the callback; returns the callback's answer. */
async function browserLogin (browser: Browser, appId: string, redirect: string, choice: Record<string, string> = { user: 'alice' }) {
  const start = await browser.get(authorizeUrl(appId, redirect))
  if (start.status !== 302) throw new Error(`authorize: ${start.status} ${start.text}`)
  const page = await browser.get(withQuery(start.location!, choice))
  if (page.status !== 302) throw new Error(`page: ${page.status} ${page.text}`)
  return { start, page, callback: await browser.get(page.location!) }
}

async function ticketLogin (ticket: string, appId?: string): Promise<Pair> {
  const a = await post(base + '/auth/login', appId === undefined ? { ticket } : { ticket, appId })
  if (a.status !== 200) throw new Error(`ticket login: ${a.status} ${a.text}`)
  return a.json!.data as Pair
}

async function identity (pair: Pair): Promise<Record<string, string>> {
  const a = await get(base + '/api/whoami', bearer(pair.accessToken))
  return (JSON.parse(a.text) as { headers: Record<string, string> }).headers
}

t.test('H5 in WeChat: authorize → WeChat page → callback → ticket → tokens → a proxied call with the identity headers', async (t) => {
  const browser = new Browser(clock.now)
  const start = await browser.get(authorizeUrl(H5.appId, SHOP + 'cart?item=7'))
  t.equal(start.status, 302)
  const to = new URL(start.location!)
  t.equal(`${to.origin}${to.pathname}`, `${wechatUrl}/connect/oauth2/authorize`)
  t.equal(to.hash, '#wechat_redirect')
  t.same([...to.searchParams.keys()], ['appid', 'redirect_uri', 'response_type', 'scope', 'state'], 'WeChat\'s parameter order')
  t.equal(to.searchParams.get('appid'), H5.appId)
  t.equal(to.searchParams.get('redirect_uri'), `${base}/auth/wechat/callback`)
  t.equal(to.searchParams.get('scope'), 'snsapi_userinfo')
  t.match(to.searchParams.get('state'), /^[A-Za-z0-9_-]{43}$/)
  t.equal(start.setCookie.length, 1)
  t.match(start.setCookie[0], /^wegate_wx_login=[A-Za-z0-9_-]{43}; Path=\/auth\/wechat; Max-Age=600; HttpOnly; Secure; SameSite=Lax$/)

  const page = await browser.get(withQuery(start.location!, { user: 'alice' }))
  const callback = await browser.get(page.location!)
  t.equal(callback.status, 302)
  const back = new URL(callback.location!)
  t.equal(`${back.origin}${back.pathname}`, SHOP + 'cart')
  t.equal(back.searchParams.get('item'), '7', 'the page\'s own query is kept')
  const ticket = back.searchParams.get('ticket')!
  t.match(ticket, /^[A-Za-z0-9_-]{43}$/)
  t.same([...back.searchParams.keys()].sort(), ['item', 'ticket'], 'no token, code or error in the URL')

  const pair = await ticketLogin(ticket)
  t.match(pair, { tokenType: 'Bearer', expiresIn: 900, accessToken: /.+/, refreshToken: /.+/, openid: /^o/, unionid: /^o/ })
  const h = await identity(pair)
  t.equal(h['x-openid'], pair.openid)
  t.equal(h['x-appid'], H5.appId)
  t.equal(h['x-unionid'], pair.unionid)
  t.equal(h['x-wegate-channel'], 'officialAccount')
  t.ok(await gw.gateway.store.getWeChatGrant(H5.appId, pair.openid), 'WeChat\'s tokens kept server-side')
  t.equal(await gw.gateway.store.getSessionKey(H5.appId, pair.openid), null, 'no session_key for a web login')

  const refreshed = await post(base + '/auth/refresh', { refreshToken: pair.refreshToken })
  t.equal(refreshed.status, 200, 'refresh works as for a code login')

  const logs = gw.logs.text()
  const cookie = start.setCookie[0].split(';')[0].split('=')[1]
  for (const [what, secret] of [['ticket', ticket], ['state', to.searchParams.get('state')!], ['login cookie', cookie], ['access token', pair.accessToken]]) {
    t.notMatch(logs, secret, `the ${what} is never logged`)
  }
  t.equal((await post(base + '/auth/wechat/authorize', {})).status, 405)
  t.equal((await post(base + '/auth/wechat/callback', {})).status, 405)
})

t.test('website QR login: qrconnect with snsapi_login, then the same ticket exchange', async (t) => {
  const browser = new Browser(clock.now)
  const { start, callback } = await browserLogin(browser, WEB.appId, 'https://www.example.com/account', { user: 'bob' })
  const to = new URL(start.location!)
  t.equal(to.pathname, '/connect/qrconnect')
  t.equal(to.searchParams.get('scope'), 'snsapi_login')
  t.equal((await browser.get(authorizeUrl(WEB.appId, 'https://www.example.com/', '&scope=snsapi_userinfo'))).json?.code, 40001, 'a website logs in with snsapi_login only')
  const ticket = new URL(callback.location!).searchParams.get('ticket')!
  const pair = await ticketLogin(ticket, WEB.appId)
  const h = await identity(pair)
  t.equal(h['x-appid'], WEB.appId)
  t.equal(h['x-wegate-channel'], 'website')
})

t.test('mobile App: POST /auth/login {code, appId} exchanges the SDK code with sns/oauth2; WeChat\'s tokens never answered', async (t) => {
  const before = emulator.oauthCalls
  const a = await post(base + '/auth/login', { code: 'u-carol-app1', appId: APP.appId })
  t.equal(a.status, 200)
  t.equal(emulator.oauthCalls, before + 1)
  const pair = a.json!.data as Pair & Record<string, unknown>
  t.same(Object.keys(pair).sort(), ['accessToken', 'expiresIn', 'openid', 'refreshExpiresIn', 'refreshToken', 'tokenType', 'unionid'])
  const grant = await gw.gateway.store.getWeChatGrant(APP.appId, pair.openid)
  t.ok(grant)
  const weChatAccessToken = (JSON.parse(grant!) as { accessToken: string }).accessToken
  t.notMatch(a.text, weChatAccessToken)
  t.notMatch(gw.logs.text(), weChatAccessToken, 'never logged')
  const h = await identity(pair)
  t.equal(h['x-appid'], APP.appId)
  t.equal(h['x-wegate-channel'], 'mobileApp')
  const used = await post(base + '/auth/login', { code: 'err40163-x', appId: APP.appId })
  t.equal(used.json?.code, 10002, 'WeChat errcodes mapped as for a mini program')
})

t.test('one person, one X-UnionID across the mini program, the H5 page and the App; X-OpenID per app', async (t) => {
  const mp = (await post(base + '/auth/login', { code: 'u-dave-mp1', appId: MP.appId })).json!.data as Pair
  const app = (await post(base + '/auth/login', { code: 'u-dave-app1', appId: APP.appId })).json!.data as Pair
  const { callback } = await browserLogin(new Browser(clock.now), H5.appId, SHOP, { user: 'dave' })
  const h5 = await ticketLogin(new URL(callback.location!).searchParams.get('ticket')!)
  const [hm, ha, hh] = [await identity(mp), await identity(app), await identity(h5)]
  t.ok(hm['x-unionid'])
  t.equal(ha['x-unionid'], hm['x-unionid'])
  t.equal(hh['x-unionid'], hm['x-unionid'])
  t.equal(new Set([hm['x-openid'], ha['x-openid'], hh['x-openid']]).size, 3)
  t.same([hm['x-wegate-channel'], ha['x-wegate-channel'], hh['x-wegate-channel']], ['miniprogram', 'mobileApp', 'officialAccount'])
  const forged = await get(base + '/api/x', { ...bearer(mp.accessToken), 'x-wegate-channel': 'website', X_WeGate_Channel: 'website' })
  t.equal((JSON.parse(forged.text) as { headers: Record<string, string> }).headers['x-wegate-channel'], 'miniprogram', 'a client\'s copy never passes')
})

t.test('canary.openids work per openid: a tester listed with her H5 openid is on the canary there, not in the mini program', async (t) => {
  const { callback } = await browserLogin(new Browser(clock.now), H5.appId, SHOP, { user: 'erin' })
  const h5 = await ticketLogin(new URL(callback.location!).searchParams.get('ticket')!)
  t.equal(h5.openid, openidOf(H5.appId, 'erin'))
  const mp = (await post(base + '/auth/login', { code: 'u-erin-mp1', appId: MP.appId })).json!.data as Pair
  const hostOf = async (pair: Pair) => (JSON.parse((await get(base + '/grey/x', bearer(pair.accessToken))).text) as { headers: Record<string, string> }).headers.host
  t.equal(await hostOf(h5), new URL(canaryUrl).host)
  t.equal(await hostOf(mp), new URL(echoUrl).host, 'her mini-program openid is another caller: list it too to target her there')
})

t.test('open redirect refused: anything outside the allowlist is a 400 envelope, never a redirect', async (t) => {
  for (const redirect of ['https://evil.example.net/', 'https://h5.example.com.evil.net/shop/', 'https://h5.example.com/other/', 'http://h5.example.com/shop/',
    '//evil.example.net/shop/', 'javascript:alert(1)//h5.example.com/shop/', 'https://user@h5.example.com/shop/', '/shop/']) {
    const browser = new Browser(clock.now)
    const a = await browser.get(authorizeUrl(H5.appId, redirect))
    t.equal(a.status, 400, redirect)
    t.equal(a.json?.code, 40016, redirect)
    t.equal(a.location, undefined)
    t.same(a.setCookie, [], 'no login started')
  }
  const mp = await new Browser().get(authorizeUrl(MP.appId, SHOP))
  t.equal(mp.json?.code, 40017, 'a mini program does not log in through the browser')
  const noApp = await new Browser().get(`${base}/auth/wechat/authorize?redirect=${encodeURIComponent(SHOP)}`)
  t.match(noApp.json, { code: 40002, message: /appId is required/ }, 'two browser apps: appId required')
  const h5Code = await post(base + '/auth/login', { code: 'u-x-1', appId: H5.appId })
  t.equal(h5Code.json?.code, 40017, 'an official account has no code login')
})

t.test('state: replayed, from another browser, or expired is refused (400 envelope, no redirect)', async (t) => {
  const alice = new Browser(clock.now)
  const { page } = await browserLogin(alice, H5.appId, SHOP)
  const replay = await alice.get(page.location!)
  t.equal(replay.status, 400)
  t.equal(replay.json?.code, 10010, 'replayed')
  t.equal(replay.location, undefined)

  const victim = new Browser(clock.now)
  const attacker = new Browser(clock.now)
  const start = await attacker.get(authorizeUrl(H5.appId, SHOP))
  const attackerPage = await attacker.get(withQuery(start.location!, { user: 'mallory' }))
  const csrf = await victim.get(attackerPage.location!)
  t.equal(csrf.status, 400)
  t.equal(csrf.json?.code, 10010, 'a callback from another browser (login CSRF)')

  const slow = new Browser(clock.now)
  const s = await slow.get(authorizeUrl(H5.appId, SHOP))
  const p = await slow.get(withQuery(s.location!, { user: 'alice' }))
  clock.advance(10 * 60_000 + 1)
  const late = await slow.get(p.location!)
  t.equal(late.json?.code, 10010, 'older than 10 minutes')

  const forged = await new Browser(clock.now).get(`${base}/auth/wechat/callback?code=u-a-1&state=${'A'.repeat(43)}`)
  t.equal(forged.json?.code, 10010, 'a state the gateway never issued')
  t.equal((await new Browser(clock.now).get(`${base}/auth/wechat/callback?code=u-a-1`)).json?.code, 10010, 'no state')
})

t.test('ticket: single use, 60 s, bound to its app', async (t) => {
  const ticketOf = async () => new URL((await browserLogin(new Browser(clock.now), H5.appId, SHOP)).callback.location!).searchParams.get('ticket')!
  const ticket = await ticketOf()
  await ticketLogin(ticket)
  const again = await post(base + '/auth/login', { ticket })
  t.equal(again.status, 401)
  t.equal(again.json?.code, 10011, 'reused')

  const late = await ticketOf()
  clock.advance(60_001)
  t.equal((await post(base + '/auth/login', { ticket: late })).json?.code, 10011, 'expired')

  const other = await ticketOf()
  t.equal((await post(base + '/auth/login', { ticket: other, appId: WEB.appId })).json?.code, 10011, 'presented for another app')
  t.equal((await post(base + '/auth/login', { ticket: 'x'.repeat(43) })).json?.code, 10011, 'made up')
  t.equal((await post(base + '/auth/login', { ticket: 'x', code: 'y' })).json?.code, 40001, 'a code or a ticket, not both')
})

t.test('the user refuses: back to the page with error=access_denied and no ticket', async (t) => {
  const { callback } = await browserLogin(new Browser(clock.now), H5.appId, SHOP, { refuse: '1' })
  t.equal(callback.status, 302)
  const back = new URL(callback.location!)
  t.equal(back.searchParams.get('error'), 'access_denied')
  t.equal(back.searchParams.get('ticket'), null)
})

t.test('every WeChat errcode of the web exchange comes back to the page as error=login_failed with the catalog code', async (t) => {
  const cases: Array<[string, number]> = [['err40029-x', 10001], ['err40163-x', 10002], ['err40125-x', 50004], ['err40013-x', 50004], ['err-1-x', 50001]]
  for (const [code, expected] of cases) {
    const browser = new Browser(clock.now)
    const start = await browser.get(authorizeUrl(H5.appId, SHOP))
    const state = new URL(start.location!).searchParams.get('state')!
    // WeChat's page sends the browser back with this code.
    const callback = await browser.get(`${base}/auth/wechat/callback?code=${code}&state=${state}`)
    t.equal(callback.status, 302, code)
    const back = new URL(callback.location!)
    t.equal(`${back.origin}${back.pathname}`, SHOP)
    t.equal(back.searchParams.get('error'), 'login_failed', code)
    t.equal(back.searchParams.get('errorCode'), String(expected), code)
    t.equal(back.searchParams.get('ticket'), null)
  }
  // a real reuse: the page's code exchanged once already
  const browser = new Browser(clock.now)
  const { page } = await browserLogin(browser, H5.appId, SHOP)
  const code = new URL(page.location!).searchParams.get('code')!
  const again = await browser.get(authorizeUrl(H5.appId, SHOP))
  const state = new URL(again.location!).searchParams.get('state')!
  const reused = await browser.get(`${base}/auth/wechat/callback?code=${code}&state=${state}`)
  t.equal(new URL(reused.location!).searchParams.get('errorCode'), '10002', 'WeChat 40163 on a code already spent')
})
