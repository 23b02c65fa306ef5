/**
 * CORS (`cors`, `routes[].cors`) over real sockets: preflights answered by the
 * gateway (204, never forwarded, no token, not rate limited, counted under their
 * route) for /auth/login and a proxied route, from an allowed and a disallowed
 * origin; credentials; an upstream's own CORS headers replaced where a policy
 * applies and passed through where none does; a reload changes the policy.
 */
import { createServer } from 'node:http'
import t from 'tap'
import { request } from 'undici'
import { APP_A, login, metric, startWeChat } from './helpers/auth.js'
import { stringify } from 'yaml'
import { ConfigError } from '../src/config/errors.js'
import { parseConfig } from '../src/config/load.js'
import { baseConfig, merge, startGateway, writeConfigFile } from './helpers/gateway.js'

const PAGE = 'https://h5.example.com'
const OTHER = 'https://evil.example.net'

// An upstream with CORS of its own: it answers preflights itself and labels every response.
const seen: Array<{ method: string, url: string }> = []
const upstream = createServer((req, res) => {
  seen.push({ method: req.method ?? '', url: req.url ?? '' })
  req.resume()
  res.setHeader('access-control-allow-origin', 'https://upstream-choice.example')
  res.setHeader('access-control-allow-credentials', 'true')
  res.setHeader('access-control-expose-headers', 'X-Upstream-Secret')
  res.setHeader('vary', 'Accept-Encoding')
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ upstream: true, url: req.url }))
})
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
t.teardown(() => { upstream.closeAllConnections(); upstream.close() })
const upstreamUrl = `http://127.0.0.1:${(upstream.address() as { port: number }).port}`
const wechat = await startWeChat(t, [APP_A])

const routes = (cors: unknown) => [
  { name: 'api', prefix: '/api', auth: 'required', rateLimit: { max: 1, window: '1m', by: 'ip' }, upstreams: [{ name: 'v1', url: upstreamUrl, weight: 1 }] },
  { name: 'open', prefix: '/open', auth: 'public', cors: { origins: ['*'] }, upstreams: [{ name: 'v1', url: upstreamUrl, weight: 1 }] },
  { name: 'legacy', prefix: '/legacy', auth: 'public', cors, upstreams: [{ name: 'v1', url: upstreamUrl, weight: 1 }] }
]
const config = (cors: Record<string, unknown> | undefined, legacy: unknown) => ({
  wechat: { baseUrl: wechat.url, timeout: '2s', apps: [APP_A] },
  rateLimits: { login: { max: 100000, window: '1m', by: 'ip' } },
  ...(cors === undefined ? {} : { cors }),
  routes: routes(legacy)
})
const gw = await startGateway(t, config({ origins: [PAGE], credentials: true }, false))
const base = gw.url

interface Got { status: number, headers: Record<string, string | string[] | undefined>, text: string }
async function call (method: 'GET' | 'POST' | 'OPTIONS', path: string, headers: Record<string, string> = {}, body?: string): Promise<Got> {
  const r = await request(base + path, { method, headers, body })
  return { status: r.statusCode, headers: r.headers, text: await r.body.text() }
}
const preflight = (path: string, origin: string, method = 'POST', headers = 'content-type') =>
  call('OPTIONS', path, { origin, 'access-control-request-method': method, 'access-control-request-headers': headers })
const corsHeaders = (g: Got) => Object.fromEntries(Object.entries(g.headers).filter(([k]) => k.startsWith('access-control-')))

t.test('preflight for /auth/login: answered by the gateway, allowed origin with credentials, disallowed origin without CORS headers', async (t) => {
  const before = await metric(gw.adminUrl, 'wegate_requests_total', { route: 'auth_login', method: 'OPTIONS', status_class: '2xx' })
  const ok = await preflight('/auth/login', PAGE)
  t.equal(ok.status, 204)
  t.equal(ok.text, '')
  t.same(corsHeaders(ok), {
    'access-control-allow-origin': PAGE,
    'access-control-allow-credentials': 'true',
    'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
    'access-control-allow-headers': 'Authorization, Content-Type, X-Request-Id, traceparent, tracestate',
    'access-control-max-age': '600'
  })
  t.equal(ok.headers.vary, 'Origin')
  t.match(ok.headers['x-request-id'], /.+/)
  const no = await preflight('/auth/login', OTHER)
  t.equal(no.status, 204, 'the same answer…')
  t.same(corsHeaders(no), {}, '…without any CORS header: the browser refuses the call')
  t.equal(no.headers.vary, 'Origin')
  t.equal(await metric(gw.adminUrl, 'wegate_requests_total', { route: 'auth_login', method: 'OPTIONS', status_class: '2xx' }), before + 2, 'counted under the route')
  // an OPTIONS that is not a preflight is what it was: a 405
  t.equal((await call('OPTIONS', '/auth/login', { origin: PAGE })).status, 405)
})

t.test('the login itself: the allowed origin may read it with credentials; another origin gets the same answer without CORS headers', async (t) => {
  const body = JSON.stringify({ code: 'u-cors-1' })
  const mine = await call('POST', '/auth/login', { origin: PAGE, 'content-type': 'application/json' }, body)
  t.equal(mine.status, 200)
  t.equal(mine.headers['access-control-allow-origin'], PAGE)
  t.equal(mine.headers['access-control-allow-credentials'], 'true')
  t.equal(mine.headers['access-control-expose-headers'], 'X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset')
  t.equal(mine.headers.vary, 'Origin')
  const theirs = await call('POST', '/auth/login', { origin: OTHER, 'content-type': 'application/json' }, JSON.stringify({ code: 'u-cors-2' }))
  t.equal(theirs.status, 200)
  t.same(corsHeaders(theirs), {})
  t.equal(theirs.headers.vary, 'Origin')
  const without = await call('POST', '/auth/login', { 'content-type': 'application/json' }, JSON.stringify({ code: 'u-cors-3' }))
  t.same(corsHeaders(without), {}, 'no Origin (a mini program): no CORS headers')
  t.equal(without.headers.vary, 'Origin', 'but Vary: Origin, for caches')
  const refused = await call('POST', '/auth/login', { origin: PAGE, 'content-type': 'application/json' }, '{"code":""}')
  t.equal(refused.status, 400)
  t.equal(refused.headers['access-control-allow-origin'], PAGE, 'an error envelope is readable by the page too')
})

t.test('a proxied route: preflight never forwarded, needs no token, is not rate limited; the upstream\'s CORS headers are replaced', async (t) => {
  const forwarded = seen.length
  for (let i = 0; i < 5; i++) {
    const p = await preflight('/api/orders', PAGE, 'DELETE', 'authorization')
    t.equal(p.status, 204, `preflight ${i + 1} (rateLimit max 1; no token)`)
    t.equal(p.headers['access-control-allow-origin'], PAGE)
  }
  t.equal((await preflight('/api/orders', OTHER)).headers['access-control-allow-origin'], undefined)
  t.equal(seen.length, forwarded, 'no preflight reached the upstream')
  t.equal(await metric(gw.adminUrl, 'wegate_requests_total', { route: 'api', method: 'OPTIONS', status_class: '2xx' }), 6)

  const pair = await login(base, 'u-cors-api')
  const mine = await call('GET', '/api/orders', { origin: PAGE, authorization: `Bearer ${pair.accessToken}` })
  t.equal(mine.status, 200)
  t.same(corsHeaders(mine), {
    'access-control-allow-origin': PAGE,
    'access-control-allow-credentials': 'true',
    'access-control-expose-headers': 'X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset'
  }, 'the gateway\'s policy, not the upstream\'s')
  t.equal(mine.headers.vary, 'Accept-Encoding, Origin', 'Vary merged')
  t.match(JSON.parse(mine.text), { upstream: true })
  const limited = await call('GET', '/api/orders', { origin: PAGE, authorization: `Bearer ${pair.accessToken}` })
  t.equal(limited.status, 429)
  t.equal(limited.headers['access-control-allow-origin'], PAGE, 'the page can read the 429 and its Retry-After')
  t.match(limited.headers['access-control-expose-headers'], /Retry-After/)
  const theirs = await call('GET', '/api/orders', { origin: OTHER })
  t.equal(theirs.status, 401)
  t.same(corsHeaders(theirs), {})
})

t.test('route overrides: `*` without credentials; `cors: false` passes the upstream\'s CORS through and forwards preflights', async (t) => {
  const any = await call('GET', '/open/x', { origin: OTHER })
  t.same(corsHeaders(any), { 'access-control-allow-origin': OTHER, 'access-control-expose-headers': 'X-Request-Id, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset' }, 'any origin, no credentials, upstream\'s dropped')
  t.equal((await preflight('/open/x', 'https://a.example')).headers['access-control-allow-origin'], 'https://a.example')

  const forwarded = seen.length
  const p = await preflight('/legacy/x', PAGE)
  t.equal(p.status, 200, 'the upstream answered')
  t.equal(seen.length, forwarded + 1)
  t.equal(seen.at(-1)?.method, 'OPTIONS')
  t.equal(p.headers['access-control-allow-origin'], 'https://upstream-choice.example', 'its own headers, untouched')
  const g = await call('GET', '/legacy/x', { origin: PAGE })
  t.equal(g.headers['access-control-allow-origin'], 'https://upstream-choice.example')
  t.equal(g.headers['access-control-expose-headers'], 'X-Upstream-Secret')
  t.equal(g.headers.vary, 'Accept-Encoding')
})

t.test('a reload changes the policy; removing it restores pass-through', async (t) => {
  const applied = await gw.gateway.reload(await writeConfigFile(config({ origins: [OTHER], credentials: false, maxAge: '1h', headers: ['Content-Type'] }, undefined)))
  t.equal(applied.status, 'applied')
  t.same(corsHeaders(await preflight('/auth/login', PAGE)), {}, 'the old origin: no longer allowed')
  const p = await preflight('/auth/login', OTHER)
  t.same(corsHeaders(p), {
    'access-control-allow-origin': OTHER,
    'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
    'access-control-allow-headers': 'Content-Type',
    'access-control-max-age': '3600'
  }, 'the new one, without credentials')
  t.equal((await call('GET', '/legacy/x', { origin: OTHER })).headers['access-control-allow-origin'], OTHER, 'legacy now under the top-level policy')

  t.equal((await gw.gateway.reload(await writeConfigFile(config(undefined, undefined)))).status, 'applied')
  const none = await preflight('/auth/login', OTHER)
  t.equal(none.status, 405, 'no policy: /auth/login takes no OPTIONS')
  t.equal(none.headers.vary, undefined)
  const forwarded = seen.length
  const q = await preflight('/api/orders', OTHER)
  t.equal(q.status, 401, 'a proxied preflight goes through the route as any request (auth: required)')
  t.equal(seen.length, forwarded)
  const up = await call('GET', '/open/x', { origin: OTHER })
  t.equal(up.headers['access-control-allow-origin'], OTHER, 'a route\'s own policy stays')
})

t.test('wegate check: origins as browsers send them, no `*` with credentials, a reload with a bad policy is refused', async (t) => {
  const problemsOf = (patch: Record<string, unknown>): string[] => {
    try {
      parseConfig(stringify(merge(baseConfig(), patch)), {})
    } catch (e) {
      if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`)
      throw e
    }
    return []
  }
  const up = [{ name: 'v1', url: 'http://127.0.0.1:1', weight: 1 }]
  t.same(problemsOf({ cors: { origins: ['https://H5.example.com', 'https://h5.example.com/', 'https://h5.example.com:443', 'https://a.example', 'https://a.example'] } }), [
    "cors.origins[0]: must be an origin exactly as browsers send it ('https://h5.example.com'): scheme://host[:port], lower case, no path or trailing /",
    "cors.origins[1]: must be an origin exactly as browsers send it ('https://h5.example.com'): scheme://host[:port], lower case, no path or trailing /",
    "cors.origins[2]: must be an origin exactly as browsers send it ('https://h5.example.com'): scheme://host[:port], lower case, no path or trailing /",
    "cors.origins[4]: duplicate origin 'https://a.example' (also at index 3)"
  ])
  t.same(problemsOf({ routes: [{ name: 'r', prefix: '/r', cors: { origins: ['*'], credentials: true }, upstreams: up }] }), [
    'routes[0].cors.origins[0]: `*` cannot go with credentials: true (browsers refuse it): list the origins'
  ])
  t.match(problemsOf({ cors: { origins: [] } }), [/^cors\.origins: /], 'at least one origin')
  t.match(problemsOf({ cors: { origins: ['h5.example.com'] } }), [/^cors\.origins\/0|^cors\.origins\[0\]/], 'a scheme is needed')
  t.same(problemsOf({ cors: { origins: ['http://127.0.0.1:8080'] }, routes: [{ name: 'r', prefix: '/r', cors: false, upstreams: up }] }), [])

  const refused = await gw.gateway.reload(await writeConfigFile(config({ origins: ['*'], credentials: true }, false)))
  t.equal(refused.status, 'refused', 'the running policy stays')
})
