/**
 * The browser-login cookie is `__Host-wegate_wx_login`: a sibling subdomain or a
 * network attacker (Set-Cookie injected into a plain-http response) cannot plant
 * it, a planted cookie of the old name is ignored, and — since `__Host-` forces
 * Path=/ — the gateway strips it from every request and WebSocket upgrade it
 * forwards, other cookies intact. The gateway is reached as `localhost` and its
 * sibling as `evil.localhost`, by a browser that applies the cookie rules
 * (test/helpers/browser.ts).
 */
import t from 'tap'
import { request } from 'undici'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { startEcho } from './helpers/auth.js'
import { Browser, withQuery } from './helpers/browser.js'
import { startGateway, testClock } from './helpers/gateway.js'
import { freePort } from './helpers/redis.js'
import { closeWs, openWs, startWsUpstream } from './helpers/websocket.js'

const LOGIN = '__Host-wegate_wx_login'
const H5 = { type: 'officialAccount', appId: 'wxh500000000000001', secret: 'h5-secret', redirects: ['https://h5.example.com/shop/'] }
const SHOP = 'https://h5.example.com/shop/'

const emulator = createWeChatEmulator({ apps: [H5] })
const wechatUrl = await emulator.listen()
t.teardown(() => emulator.close())
const echoUrl = await startEcho(t)
const wsUpstream = await startWsUpstream(t, 'live')
const clock = testClock()
const port = await freePort()
await startGateway(t, {
  listen: { host: '127.0.0.1', port },
  publicUrl: `http://localhost:${port}`,
  store: { type: 'memory' },
  wechat: { baseUrl: wechatUrl, openBaseUrl: wechatUrl, timeout: '2s', retries: 1, apps: [H5] },
  rateLimits: { login: { max: 100000, window: '1m', by: 'ip' } },
  routes: [
    { name: 'echo', prefix: '/api', auth: 'public', upstreams: [{ name: 'v1', url: echoUrl, weight: 1 }] },
    { name: 'live', prefix: '/ws', auth: 'public', upstreams: [{ name: 'v1', url: wsUpstream.url, weight: 1 }] }
  ]
}, { now: clock.now })
const site = `http://localhost:${port}`

/** authorize → WeChat's page as `user` → callback: the ticket the page receives. */
async function ticketFor (browser: Browser, user: string): Promise<string> {
  const start = await browser.get(`${site}/auth/wechat/authorize?appId=${H5.appId}&redirect=${encodeURIComponent(SHOP)}`)
  const page = await browser.get(withQuery(start.location!, { user }))
  const callback = await browser.get(page.location!)
  const ticket = new URL(callback.location ?? 'x:').searchParams.get('ticket')
  if (ticket === null) throw new Error(`no ticket: ${callback.status} ${callback.location ?? callback.text}`)
  return ticket
}

/** The Cookie header the echo upstream received for a GET by `browser`. */
async function upstreamCookie (browser: Browser, path: string): Promise<string | undefined> {
  const a = await browser.get(site + path)
  return (JSON.parse(a.text) as { headers: Record<string, string> }).headers.cookie
}

t.test('the browser keeps the __Host- login cookie (Path=/, no Domain, Secure on localhost)', async (t) => {
  const browser = new Browser(clock.now)
  const start = await browser.get(`${site}/auth/wechat/authorize?appId=${H5.appId}&redirect=${encodeURIComponent(SHOP)}`)
  t.match(start.setCookie, [/^__Host-wegate_wx_login=[A-Za-z0-9_-]{43}; Max-Age=600; Path=\/; HttpOnly; Secure; SameSite=Lax$/])
  t.ok(browser.cookie(site + '/auth/login', LOGIN), 'accepted: a __Host- cookie of the right shape')
  // the helper is honest: it refuses what browsers refuse
  const strict = new Browser(clock.now)
  t.notOk(strict.receive(site + '/', `${LOGIN}=x; Path=/; HttpOnly`), '__Host- without Secure')
  t.notOk(strict.receive(site + '/', `${LOGIN}=x; Path=/auth; Secure`), '__Host- with Path other than /')
  t.notOk(strict.receive(site + '/', `${LOGIN}=x; Secure`), '__Host- without a Path attribute')
  t.notOk(strict.receive(site + '/', `${LOGIN}=x; Path=/; Secure; Domain=localhost`), '__Host- with a Domain')
  t.notOk(strict.receive('http://shop.example.test/', `${LOGIN}=x; Path=/; Secure`), 'Secure over plain http (not localhost)')
  t.same(strict.cookies, [])
})

t.test('cookie planting: a sibling subdomain or a plain-http response cannot give a browser a login cookie the gateway reads', async (t) => {
  // the attacker's own login, stopped at the ticket: its link and its cookie value are what they plant
  const attacker = new Browser(clock.now)
  const theirTicket = await ticketFor(attacker, 'mallory')
  const theirCookie = attacker.cookie(site + '/auth/login', LOGIN)!

  const victim = new Browser(clock.now)
  // evil.localhost, a sibling of the gateway's host, tries every way to plant the attacker's value
  t.ok(victim.receive('http://evil.localhost/', `wegate_wx_login=${theirCookie}; Domain=localhost; Path=/auth; Max-Age=31536000`), 'the old name, for the parent domain: a browser keeps it')
  t.notOk(victim.receive('http://evil.localhost/', `${LOGIN}=${theirCookie}; Domain=localhost; Path=/; Secure`), '__Host- for the parent domain: refused')
  t.ok(victim.receive('http://evil.localhost/', `${LOGIN}=${theirCookie}; Path=/; Secure`), '__Host- for its own host: kept, for evil.localhost only')
  t.equal(victim.cookie(site + '/auth/login', LOGIN), undefined, 'no login cookie reaches the gateway')
  t.match(victim.cookie(site + '/auth/login', 'wegate_wx_login'), theirCookie, 'the planted Domain= cookie does')

  // the attacker's link in the victim's browser: the planted cookie is not the login cookie
  const forwarded = await victim.post(site + '/auth/login', { ticket: theirTicket })
  t.equal(forwarded.status, 403)
  t.match(forwarded.json, { code: 10012, message: /another browser/ }, 'not logged in as the attacker')

  // and no lock-out: the victim's own login works with the planted cookie still there
  const mine = await ticketFor(victim, 'victor')
  const own = await victim.post(site + '/auth/login', { ticket: mine })
  t.equal(own.status, 200, 'the victim\'s own login, despite the long-lived planted cookie')
  t.ok(victim.cookie(site + '/auth/login', 'wegate_wx_login'), '(still planted)')
})

t.test('a proxied request never carries the login cookie upstream; other cookies pass intact', async (t) => {
  const browser = new Browser(clock.now)
  browser.receive(site + '/', 'theme=dark; Path=/')
  browser.receive(site + '/api', 'cart=7%3B2; Path=/api')
  t.equal(await upstreamCookie(browser, '/api/x'), 'cart=7%3B2; theme=dark', 'before a login: as the browser sent them')
  await browser.get(`${site}/auth/wechat/authorize?appId=${H5.appId}&redirect=${encodeURIComponent(SHOP)}`)
  const login = browser.cookie(site + '/api/x', LOGIN)
  t.ok(login, 'mid-login the browser sends the login cookie to proxied paths too (Path=/)')
  t.equal(await upstreamCookie(browser, '/api/x'), 'cart=7%3B2; theme=dark', 'the upstream sees the others, not it')

  const only = new Browser(clock.now)
  await only.get(`${site}/auth/wechat/authorize?appId=${H5.appId}&redirect=${encodeURIComponent(SHOP)}`)
  t.equal(await upstreamCookie(only, '/api/x'), undefined, 'the login cookie alone: no Cookie header upstream at all')

  // any position, any spacing, several Cookie lines; a value that merely contains the name stays
  const raw = async (cookie: string | string[]) => {
    // several Cookie lines as separate header lines (Node's server joins them with '; ')
    const res = await request(`http://127.0.0.1:${port}/api/raw`, { headers: (Array.isArray(cookie) ? cookie : [cookie]).flatMap((c) => ['cookie', c]) })
    return ((await res.body.json()) as { headers: Record<string, string> }).headers.cookie
  }
  t.equal(await raw(`a=1;${LOGIN}=${login!};b=2`), 'a=1; b=2')
  t.equal(await raw(`${LOGIN}=x; ${LOGIN}=y`), undefined)
  t.equal(await raw([`${LOGIN}=x`, 'a=1']), 'a=1')
  t.equal(await raw(`note=${LOGIN}; x${LOGIN}=1`), `note=${LOGIN}; x${LOGIN}=1`, 'other names and values are not touched')
  t.equal(await raw('a=1; b=2'), 'a=1; b=2')
})

t.test('a WebSocket upgrade never carries the login cookie upstream; other cookies pass intact', async (t) => {
  const before = wsUpstream.handshakes.length
  const a = await openWs(site.replace('localhost', '127.0.0.1'), '/ws/room', { cookie: `theme=dark; ${LOGIN}=${'x'.repeat(43)}; sid=s1` })
  t.equal(a.status, 101)
  await closeWs(a.ws)
  const b = await openWs(site.replace('localhost', '127.0.0.1'), '/ws/room', { cookie: `${LOGIN}=${'x'.repeat(43)}` })
  t.equal(b.status, 101)
  await closeWs(b.ws)
  const seen = wsUpstream.handshakes.slice(before)
  t.equal(seen.length, 2)
  t.equal(seen[0].headers.cookie, 'theme=dark; sid=s1')
  t.equal(seen[1].headers.cookie, undefined, 'the login cookie alone: no Cookie header')
})
