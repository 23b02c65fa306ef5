/**
 * WeChat web and App logins end to end, over real sockets with a cookie-keeping
 * browser, the emulator's pages and real Redis: the H5 (official account) flow,
 * the website QR flow, the App flow, one X-UnionID across channels, and every
 * way a browser login must fail — including a ticket link forwarded to another
 * browser (login CSRF), on the memory store and on Redis.
 */
import { createHash, randomBytes } from 'node:crypto'
import t from 'tap'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { bearer, get, post, redisFor, startEcho, type Pair } from './helpers/auth.js'
import { Browser, withQuery } from './helpers/browser.js'
import { startGateway, testClock } from './helpers/gateway.js'
import { freePort } from './helpers/redis.js'

const MP = { appId: 'wxmp00000000000001', secret: 'mp-secret' }
// '…/app' without a trailing slash: the allowlist must still stop at a path boundary
const H5 = { type: 'officialAccount', appId: 'wxh500000000000001', secret: 'h5-secret', redirects: ['https://h5.example.com/shop/', 'https://h5.example.com/app'] }
// an H5 page on another origin: its logins are bound to a PKCE-style verifier
const PAGES = { type: 'officialAccount', appId: 'wxh5pages000000001', secret: 'pages-secret', redirects: ['https://h5.example.com/shop/'], loginBinding: 'codeChallenge' }
const WEB = { type: 'website', appId: 'wxweb0000000000001', secret: 'web-secret', redirects: ['https://www.example.com/'] }
const APP = { type: 'mobileApp', appId: 'wxapp0000000000001', secret: 'app-secret' }
const SHOP = 'https://h5.example.com/shop/'
const LOGIN_COOKIE = '__Host-wegate_wx_login'

const redis = await redisFor(t)
const emulator = createWeChatEmulator({ apps: [MP, H5, PAGES, WEB, APP] })
const wechatUrl = await emulator.listen()
t.teardown(() => emulator.close())
const echoUrl = await startEcho(t)
const canaryUrl = await startEcho(t)
/** The emulator's openid of a test user in an app (docs/emulator.md: a hash of appid and name). */
const openidOf = (appId: string, user: string) => 'o' + createHash('sha256').update(`openid\0${appId}\0user:${user}`).digest('base64url').slice(0, 27)
const clock = testClock()

/** A gateway serving the four apps on `store`. */
async function startChannels (store: Record<string, unknown>) {
  const port = await freePort()
  return await startGateway(t, {
    listen: { host: '127.0.0.1', port },
    publicUrl: `http://127.0.0.1:${port}`,
    store,
    wechat: { baseUrl: wechatUrl, openBaseUrl: wechatUrl, timeout: '2s', retries: 1, apps: [MP, H5, PAGES, WEB, APP] },
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
}
const gw = await startChannels({ type: 'redis', url: redis.url })
await gw.gateway.store.ready(5000)
const memoryGw = await startChannels({ type: 'memory' })
const base = gw.url
const stores = [['redis', gw], ['memory', memoryGw]] as const

const authorizeUrl = (appId: string, redirect: string, extra = '', at = base) =>
  `${at}/auth/wechat/authorize?appId=${appId}&redirect=${encodeURIComponent(redirect)}${extra}`

/** authorize → WeChat's page (as `user`, or refusing) → the callback; returns the callback's answer. */
async function browserLogin (browser: Browser, appId: string, redirect: string, choice: Record<string, string> = { user: 'alice' }, extra = '', at = base) {
  const start = await browser.get(authorizeUrl(appId, redirect, extra, at))
  if (start.status !== 302) throw new Error(`authorize: ${start.status} ${start.text}`)
  const page = await browser.get(withQuery(start.location!, choice))
  if (page.status !== 302) throw new Error(`page: ${page.status} ${page.text}`)
  return { start, page, callback: await browser.get(page.location!) }
}

/** A finished browser login of `user` in `browser`: the ticket the page receives. */
async function ticketFor (browser: Browser, user: string, at = base, extra = '', appId = H5.appId): Promise<string> {
  const { callback } = await browserLogin(browser, appId, SHOP, { user }, extra, at)
  const ticket = new URL(callback.location!).searchParams.get('ticket')
  if (ticket === null) throw new Error(`no ticket: ${callback.location}`)
  return ticket
}

/** The page trades the ticket, from `browser` (its login cookie goes along, as with a same-origin fetch). */
async function ticketLogin (browser: Browser, ticket: string, appId?: string, at = base): Promise<Pair> {
  const a = await browser.post(at + '/auth/login', appId === undefined ? { ticket } : { ticket, appId })
  if (a.status !== 200) throw new Error(`ticket login: ${a.status} ${a.text}`)
  return a.json!.data as Pair
}

/** A page's PKCE-style pair: a verifier it keeps (sessionStorage) and its S256 challenge for authorize. */
function pkce () {
  const verifier = randomBytes(48).toString('base64url')
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') }
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
  t.match(start.setCookie[0], /^__Host-wegate_wx_login=[A-Za-z0-9_-]{43}; Max-Age=600; Path=\/; HttpOnly; Secure; SameSite=Lax$/)

  const page = await browser.get(withQuery(start.location!, { user: 'alice' }))
  const callback = await browser.get(page.location!)
  t.equal(callback.status, 302)
  const back = new URL(callback.location!)
  t.equal(`${back.origin}${back.pathname}`, SHOP + 'cart')
  t.equal(back.searchParams.get('item'), '7', 'the page\'s own query is kept')
  const ticket = back.searchParams.get('ticket')!
  t.match(ticket, /^[A-Za-z0-9_-]{43}$/)
  t.same([...back.searchParams.keys()].sort(), ['item', 'ticket'], 'no token, code or error in the URL')

  const code = new URL(page.location!).searchParams.get('code')!
  const cookie = browser.cookie(base + '/auth/login', LOGIN_COOKIE)!
  t.ok(cookie, 'the login cookie goes to /auth/login')
  t.equal(browser.cookie(base + '/api/x', LOGIN_COOKIE), cookie, 'and, Path=/ (__Host-), to proxied paths: the gateway strips it (channels-cookie.test.ts)')
  const exchange = await browser.post(base + '/auth/login', { ticket })
  t.equal(exchange.status, 200)
  t.same(exchange.setCookie, ['__Host-wegate_wx_login=; Max-Age=0; Path=/; HttpOnly; Secure; SameSite=Lax'], 'the login cookie is cleared once used')
  t.equal(browser.cookie(base + '/auth/login', LOGIN_COOKIE), undefined)
  const pair = exchange.json!.data as Pair
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
  for (const [what, secret] of [['ticket', ticket], ['state', to.searchParams.get('state')!], ['WeChat code', code], ['login cookie', cookie], ['access token', pair.accessToken]]) {
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
  const pair = await ticketLogin(browser, ticket, WEB.appId)
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
  const browser = new Browser(clock.now)
  const h5 = await ticketLogin(browser, await ticketFor(browser, 'dave'))
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
  const browser = new Browser(clock.now)
  const h5 = await ticketLogin(browser, await ticketFor(browser, 'erin'))
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
  const browser = new Browser(clock.now)
  const ticket = await ticketFor(browser, 'alice')
  await ticketLogin(browser, ticket)
  const again = await browser.post(base + '/auth/login', { ticket })
  t.equal(again.status, 401)
  t.equal(again.json?.code, 10011, 'reused')

  const late = await ticketFor(browser, 'alice')
  clock.advance(60_001)
  t.equal((await browser.post(base + '/auth/login', { ticket: late })).json?.code, 10011, 'expired')

  const other = await ticketFor(browser, 'alice')
  t.equal((await browser.post(base + '/auth/login', { ticket: other, appId: WEB.appId })).json?.code, 10011, 'presented for another app')
  t.equal((await browser.post(base + '/auth/login', { ticket: 'x'.repeat(43) })).json?.code, 10011, 'made up')
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
  for (const secret of [...cases.map(([c]) => c), code, state]) t.notMatch(gw.logs.text(), secret, 'a refused code (and its state) is never logged either')
})

t.test('regression: a redirect prefix without a trailing / stops at a path boundary (no /apple, no lookalikes)', async (t) => {
  // H5's allowlist has https://h5.example.com/app (no trailing /)
  for (const redirect of ['https://h5.example.com/app', 'https://h5.example.com/app/', 'https://h5.example.com/app/x/y?z=1', 'https://h5.example.com/app?x=1',
    'https://h5.example.com/app#top', 'https://H5.EXAMPLE.COM/app/x', 'https://h5.example.com:443/app/x', 'https://h5.example.com/app/./x']) {
    const a = await new Browser(clock.now).get(authorizeUrl(H5.appId, redirect))
    t.equal(a.status, 302, `allowed: ${redirect}`)
  }
  for (const redirect of [
    'https://h5.example.com/apple', 'https://h5.example.com/app-admin', 'https://h5.example.com/app.evil.com', 'https://h5.example.com/app@evil.net',
    'https://h5.example.com/app;x', 'https://h5.example.com/app%23x', 'https://h5.example.com/app%3Fx', 'https://h5.example.com/%61pp/',
    'https://h5.example.com/app%2f..%2fadmin', 'https://h5.example.com/app/..%2Fadmin', 'https://h5.example.com/app/%2e%2e/admin', 'https://h5.example.com/app/%2e%2E%2fadmin',
    'https://h5.example.com/app%5c..%5cadmin', 'https://h5.example.com/app\\..\\admin', 'https://h5.example.com/app/../admin',
    'https://h5.example.com@evil.net/app', 'https://evil.net\\@h5.example.com/app', 'https://user:pw@h5.example.com/app/', 'https://h5.example.com\\@evil.net/app',
    'https://h5.example.com.evil.net/app', 'https://h5.example.com./app', 'https://h5.example.com:8443/app', 'http://h5.example.com/app', 'https://h5.example.co/app',
    'https://h5.example.com%2eevil.net/app', 'https://evil.net/https://h5.example.com/app'
  ]) {
    const a = await new Browser(clock.now).get(authorizeUrl(H5.appId, redirect))
    t.equal(a.json?.code, 40016, `refused: ${redirect}`)
    t.equal(a.location, undefined)
  }
})

for (const [store, started] of stores) {
  const at = started.url
  t.test(`login CSRF (${store} store): a ticket link forwarded to another browser is refused and spent; in its own browser it works once`, async (t) => {
    const attacker = new Browser(clock.now)
    // 1. the attacker finishes a login in their browser and stops at the page: ?ticket=… is the link they send
    const forwarded = await ticketFor(attacker, 'mallory', at)
    // 2. a victim who never started a login opens it: their page posts the ticket (no login cookie)
    const cold = new Browser(clock.now)
    const refused = await cold.post(at + '/auth/login', { ticket: forwarded })
    t.equal(refused.status, 403)
    t.match(refused.json, { code: 10012, message: /another browser/, data: null })
    t.same(refused.setCookie, [], 'nothing set for the refused browser')
    t.equal((await attacker.post(at + '/auth/login', { ticket: forwarded })).json?.code, 10011, 'the refused ticket is spent: not even its own browser gets it now')

    // 3. a victim in the middle of a login of their own (their own cookie): refused too
    const victim = new Browser(clock.now)
    await victim.get(authorizeUrl(H5.appId, SHOP, '', at))
    t.ok(victim.cookie(at + '/auth/login', LOGIN_COOKIE), 'the victim has a login cookie of their own')
    const second = await ticketFor(attacker, 'mallory', at)
    t.equal((await victim.post(at + '/auth/login', { ticket: second })).json?.code, 10012, 'another browser\'s cookie')
    // a cookie the attacker copied in from their own browser would match: what a __Host- cookie keeps siblings from planting (docs/channels.md)

    // 4. the attacker's own browser: once
    const own = await ticketFor(attacker, 'mallory', at)
    const first = await attacker.post(at + '/auth/login', { ticket: own })
    t.equal(first.status, 200)
    t.equal((first.json!.data as Pair).openid, openidOf(H5.appId, 'mallory'))
    t.equal((await attacker.post(at + '/auth/login', { ticket: own })).json?.code, 10011, 'only once')

    // 5. the victim's own login is untouched
    const mine = await ticketFor(victim, 'victor', at)
    t.equal((await ticketLogin(victim, mine, undefined, at)).openid, openidOf(H5.appId, 'victor'))
  })

  t.test(`two exchanges of one ticket race (${store} store): exactly one gets tokens`, async (t) => {
    const browser = new Browser(clock.now)
    const ticket = await ticketFor(browser, 'alice', at)
    const answers = await Promise.all(Array.from({ length: 6 }, async () => await browser.post(at + '/auth/login', { ticket })))
    t.same(answers.map((a) => a.json?.code).sort((x, y) => (x ?? 0) - (y ?? 0)), [200, 10011, 10011, 10011, 10011, 10011])
  })

  t.test(`a page on another origin (${store} store): loginBinding codeChallenge — codeChallenge at authorize, codeVerifier at the exchange, no cookie needed`, async (t) => {
    const page = new Browser(clock.now)
    const mine = pkce()
    const withChallenge = (c: string) => `&codeChallenge=${c}`
    const ticket = await ticketFor(page, 'alice', at, withChallenge(mine.challenge), PAGES.appId)
    const wrong = await page.post(at + '/auth/login', { ticket, codeVerifier: pkce().verifier }, { credentials: 'omit' })
    t.match(wrong.json, { code: 10012 }, 'another verifier')
    const again = await ticketFor(page, 'alice', at, withChallenge(mine.challenge), PAGES.appId)
    t.equal((await page.post(at + '/auth/login', { ticket: again })).json?.code, 10012, 'no verifier, even with the login cookie')
    const good = await ticketFor(page, 'alice', at, withChallenge(mine.challenge), PAGES.appId)
    const a = await page.post(at + '/auth/login', { ticket: good, codeVerifier: mine.verifier }, { credentials: 'omit' })
    t.equal(a.status, 200, 'the verifier alone, as a cross-origin fetch without credentials sends it')
    t.equal((a.json!.data as Pair).openid, openidOf(PAGES.appId, 'alice'))

    // the attacker's ticket forwarded to a victim's page that keeps verifiers
    const attacker = new Browser(clock.now)
    const theirs = pkce()
    const forwarded = await ticketFor(attacker, 'mallory', at, withChallenge(theirs.challenge), PAGES.appId)
    t.equal((await page.post(at + '/auth/login', { ticket: forwarded, codeVerifier: mine.verifier }, { credentials: 'omit' })).json?.code, 10012)
    // a link that starts the victim's login with the attacker's challenge: the victim's page has no verifier,
    // so it spends the ticket (no codeVerifier) — a copy that leaks later (analytics, logs) is worth nothing
    const lured = new Browser(clock.now)
    const landed = await ticketFor(lured, 'victor', at, withChallenge(theirs.challenge), PAGES.appId)
    t.equal((await lured.post(at + '/auth/login', { ticket: landed, appId: PAGES.appId }, { credentials: 'omit' })).json?.code, 10012, 'spent by the page')
    t.equal((await attacker.post(at + '/auth/login', { ticket: landed, codeVerifier: theirs.verifier }, { credentials: 'omit' })).json?.code, 10011, 'the attacker\'s verifier is too late')

    // one binding per app: a link that starts a victim's login with the attacker's challenge would make a
    // leaked ticket usable with the attacker's verifier — a cookie app refuses it, as a verifier app refuses none
    const planted = await page.get(authorizeUrl(H5.appId, SHOP, withChallenge(theirs.challenge), at))
    t.match(planted.json, { code: 40001, message: /loginBinding: cookie/ }, 'a cookie app takes no codeChallenge')
    t.same(planted.setCookie, [])
    t.match((await page.get(authorizeUrl(PAGES.appId, SHOP, '', at))).json, { code: 40001, message: /codeChallenge: required/ })
    // no downgrade: a cookie-bound ticket is refused to a page that sends a verifier, even if the
    // attacker's login cookie got into the victim's browser (copied straight into the jar: no site can plant a __Host- one)
    const cookieBound = await ticketFor(attacker, 'mallory', at)
    const victim = new Browser(clock.now)
    victim.cookies.push({ ...attacker.cookies.find((c) => c.name === LOGIN_COOKIE)! })
    t.equal((await victim.post(at + '/auth/login', { ticket: cookieBound, codeVerifier: mine.verifier })).json?.code, 10012, 'verifier sent, ticket not bound to one')

    t.equal((await page.get(authorizeUrl(PAGES.appId, SHOP, '&codeChallenge=short', at))).json?.code, 40001, 'a challenge is 43 base64url characters (S256)')
    t.equal((await page.post(at + '/auth/login', { ticket: good, codeVerifier: 'x' })).json?.code, 40001, 'a verifier is 43–128 characters of RFC 7636')
    t.equal((await page.post(at + '/auth/login', { code: 'u-a-1', codeVerifier: mine.verifier })).json?.code, 40001, 'a verifier only goes with a ticket')
    for (const secret of [mine.verifier, theirs.verifier, good, forwarded]) t.notMatch(started.logs.text(), secret, 'verifiers and tickets are never logged')
  })
}

t.test('two different login cookies in one request (no browser holds two __Host- ones; a client that sends them) are refused at the callback and the exchange', async (t) => {
  const attacker = new Browser(clock.now)
  const planted = await attacker.get(authorizeUrl(H5.appId, SHOP))
  const tossed = planted.setCookie[0].split(';')[0].split('=')[1]
  const victim = new Browser(clock.now)
  const start = await victim.get(authorizeUrl(H5.appId, SHOP))
  const wechat = await victim.get(withQuery(start.location!, { user: 'victor' }))
  const own = victim.cookie(base + '/', LOGIN_COOKIE)!
  const callback = await get(wechat.location!, { cookie: `${LOGIN_COOKIE}=${tossed}; ${LOGIN_COOKIE}=${own}` })
  t.equal(callback.json?.code, 10010, 'two different login cookies at the callback')

  const clean = new Browser(clock.now)
  const ticket = await ticketFor(clean, 'victor')
  const cleanOwn = clean.cookie(base + '/', LOGIN_COOKIE)!
  const refused = await post(base + '/auth/login', { ticket }, { cookie: `${LOGIN_COOKIE}=${tossed}; ${LOGIN_COOKIE}=${cleanOwn}` })
  t.equal(refused.json?.code, 10012, 'two different login cookies at the exchange')
  t.match(gw.logs.text(), /"reason":"two different login cookies[^"]*","msg":"browser login: ticket presented by another browser, refused and spent"/, 'the operator sees why')
})

t.test('a login cookie the browser already has is never adopted: every authorize sets a new one', async (t) => {
  const browser = new Browser(clock.now)
  const first = await browser.get(authorizeUrl(H5.appId, SHOP))
  const second = await browser.get(authorizeUrl(H5.appId, SHOP))
  const valueOf = (setCookie: string[]) => setCookie[0].split(';')[0].split('=')[1]
  t.not(valueOf(second.setCookie), valueOf(first.setCookie), 'a planted value (sibling site) never becomes the binding of this browser\'s login')
  // the first start's state is bound to the first cookie: that login starts again
  const page = await browser.get(withQuery(first.location!, { user: 'alice' }))
  t.equal((await browser.get(page.location!)).json?.code, 10010)
})

t.test('a ticket or error written into the redirect by whoever made the link never reaches the page', async (t) => {
  const attacker = new Browser(clock.now)
  const theirs = await ticketFor(attacker, 'mallory')
  const link = SHOP + `?ticket=${theirs}&error=x&errorCode=1&item=7`
  const victim = new Browser(clock.now)
  const declined = new URL((await browserLogin(victim, H5.appId, link, { refuse: '1' })).callback.location!)
  t.same([...declined.searchParams.entries()], [['item', '7'], ['error', 'access_denied']], 'the user declined: no ticket at all')
  const done = new URL((await browserLogin(victim, H5.appId, link, { user: 'victor' })).callback.location!)
  t.same(done.searchParams.getAll('ticket').length, 1)
  t.not(done.searchParams.get('ticket'), theirs)
  t.equal(done.searchParams.get('error'), null)
  t.equal((await ticketLogin(victim, done.searchParams.get('ticket')!)).openid, openidOf(H5.appId, 'victor'))
})
