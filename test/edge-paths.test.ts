/**
 * End to end: every spelling of a path is matched (and authorised) in one
 * normalised form, and that form is what the upstream receives. Spellings that
 * could be read two ways are refused with 400 before any route is chosen.
 */
import t from 'tap'
import { ErrorCatalog } from '../src/errors.js'
import { startGateway } from './helpers/gateway.js'
import { envelope, rawRequest, startEcho, type Echo } from './helpers/upstream.js'

const api = await startEcho(t, 'api')
const pub = await startEcho(t, 'pub')
const { url } = await startGateway(t, {
  routes: [
    { name: 'api', prefix: '/api', auth: 'required', upstreams: [{ name: 'api', url: api.url, weight: 1 }] },
    { name: 'pub', prefix: '/pub', auth: 'public', upstreams: [{ name: 'pub', url: pub.url, weight: 1 }] },
    { name: 'strip', prefix: '/svc/v2', auth: 'public', stripPrefix: true, upstreams: [{ name: 'pub', url: `${pub.url}/base`, weight: 1 }] }
  ]
})
const host = new URL(url).host

async function get (path: string) {
  return await rawRequest(url, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
}

t.test('spellings that climb or wander into a protected prefix still need a token', async (t) => {
  for (const path of ['/pub/../api/orders', '/pub/%2E%2E/api/orders', '/pub/.%2e/api/orders', '//api/orders', '/./api/orders', '/pub/x/../../api/orders', '/%61pi/orders']) {
    const res = await get(path)
    t.equal(res.status, 401, `${path}: matched as /api, so 401`)
    t.equal(envelope(res.body).code, ErrorCatalog.TOKEN_MISSING.code)
  }
})

t.test('the upstream receives the normalised path and the query byte for byte', async (t) => {
  const cases: Array<[string, string]> = [
    ['/pub//a///b', '/pub/a/b'],
    ['/pub/a/./b/../c', '/pub/a/c'],
    ['/pub/%7Euser/%41', '/pub/~user/A'],
    ['/pub/caf%c3%a9', '/pub/caf%C3%A9'],
    ['/pub/x?q=%E4%B8%AD%e6%96%87&a=1&a=2&b=&c=a+b&d=%2F..%2F#frag', '/pub/x?q=%E4%B8%AD%e6%96%87&a=1&a=2&b=&c=a+b&d=%2F..%2F#frag'],
    ['/pub/x?../../etc/passwd', '/pub/x?../../etc/passwd'],
    ['/pub', '/pub']
  ]
  for (const [sent, expected] of cases) {
    const before = pub.seen.length
    const res = await get(sent)
    t.equal(res.status, 200, `${sent}: 200`)
    t.equal(pub.seen.length, before + 1)
    t.equal((JSON.parse(res.body) as Echo).url, expected, `${sent} → ${expected}`)
  }
})

t.test('stripPrefix and an upstream base path', async (t) => {
  t.equal((JSON.parse((await get('/svc/v2/items?id=7')).body) as Echo).url, '/base/items?id=7')
  t.equal((JSON.parse((await get('/svc/v2')).body) as Echo).url, '/base')
})

t.test('ambiguous spellings are refused with BAD_PATH (400) and never forwarded', async (t) => {
  const before = api.seen.length + pub.seen.length
  for (const path of ['/pub/a%2Fb', '/pub/a%2fb', '/pub/a%5Cb', '/pub\\..\\api', '/pub/a;jsessionid=1', '/pub/a%3Bb', '/pub/%00', '/pub/a%25', '/../api/orders', '/pub/../../api']) {
    const res = await get(path)
    t.equal(res.status, 400, `${path}: 400`)
    t.equal(envelope(res.body).code, ErrorCatalog.BAD_PATH.code, `${path}: BAD_PATH`)
  }
  t.equal(api.seen.length + pub.seen.length, before, 'nothing forwarded')
})

// Fastify's router rejects these before the proxy handler; app.ts's `frameworkErrors`
// turns them into the envelope instead of Fastify's body that echoes the path back.
t.test('regression: malformed escapes got Fastify\'s FST_ERR_BAD_URL body instead of the BAD_PATH envelope', async (t) => {
  for (const path of ['/pub/%zz', '/pub/%C0%AE%C0%AE/api', '/api/%E4%B8']) {
    const res = await get(path)
    t.equal(res.status, 400, `${path}: 400`)
    t.same(JSON.parse(res.body), { code: ErrorCatalog.BAD_PATH.code, message: ErrorCatalog.BAD_PATH.message, data: null }, `${path}: BAD_PATH envelope`)
    t.notMatch(res.body, /valid url component/, 'no framework text')
  }
})

t.test('prefixes match on segment boundaries and case-sensitively', async (t) => {
  for (const path of ['/apix', '/API/orders', '/pubs', '/svc/v20/x']) {
    const res = await get(path)
    t.equal(res.status, 404, `${path}: no route`)
    t.equal(envelope(res.body).code, ErrorCatalog.NO_ROUTE.code)
  }
})

t.test('absolute-form and asterisk-form targets are not proxied', async (t) => {
  t.equal((await get('http://evil.example/pub/x')).status, 400)
  const star = await rawRequest(url, `OPTIONS * HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
  t.ok(star.status === 400 || star.status === 404, `OPTIONS *: ${star.status}`)
  t.equal(pub.seen.filter((e) => e.url.includes('evil')).length, 0)
})

t.test('regression: POST /auth/login/ and /auth/foo reached a root route\'s upstream', async (t) => {
  const root = await startEcho(t, 'root')
  const { url: gw } = await startGateway(t, { routes: [{ name: 'root', prefix: '/', auth: 'public', upstreams: [{ name: 'root', url: root.url, weight: 1 }] }] })
  const gwHost = new URL(gw).host
  const send = async (method: string, path: string, extra = '') =>
    await rawRequest(gw, `${method} ${path} HTTP/1.1\r\nHost: ${gwHost}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n${extra}\r\n{}`)

  // Under /auth and /.well-known, whatever the gateway does not serve is 404 — in every
  // spelling that normalises there (// merged, dot segments, %61 decoded), for every method.
  const notServed = [
    '/auth', '/auth/', '/auth/login/', '/auth/foo', '/auth/a/b', '/auth/logout/x', '/auth?x=1',
    '//auth/login', '//auth/foo', '/auth/./login', '/auth//login', '/pub/../auth/login', '/%61uth/login', '/%61uth/x', '/%61%75%74%68/refresh',
    '/.well-known', '/.well-known/', '/.well-known/openid-configuration', '/.well-known/jwks.json/', '/%2Ewell-known/jwks.json', '//.well-known/x'
  ]
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'HEAD']) {
    for (const path of notServed) {
      const res = await send(method, path)
      t.equal(res.status, 404, `${method} ${path}: 404`)
      if (method !== 'HEAD') t.equal(envelope(res.body).code, ErrorCatalog.NO_ROUTE.code, `${method} ${path}: NO_ROUTE envelope`)
    }
  }
  // The gateway's own paths with another method: 405.
  for (const [method, path] of [['GET', '/auth/login'], ['OPTIONS', '/auth/refresh'], ['DELETE', '/auth/logout'], ['HEAD', '/auth/login'], ['POST', '/.well-known/jwks.json'], ['OPTIONS', '/.well-known/jwks.json']]) {
    const res = await send(method, path)
    t.equal(res.status, 405, `${method} ${path}: 405`)
  }
  // What the normaliser refuses is refused the same way under /auth as anywhere else.
  for (const path of ['/auth;x', '/auth/login;jsessionid=1', '/auth%2Flogin', '/auth/%3Bx']) {
    for (const method of ['GET', 'POST']) {
      const res = await send(method, path)
      t.equal(res.status, 400, `${method} ${path}: 400`)
      t.equal(envelope(res.body).code, ErrorCatalog.BAD_PATH.code)
    }
  }
  // A WebSocket handshake is routed by the same table.
  const ws = await send('GET', '/auth/socket', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n')
  t.equal(ws.status, 404, 'upgrade to /auth/socket: 404')
  t.equal(root.seen.length, 0, 'nothing under /auth or /.well-known reached the root route')

  // The exact endpoints still answer (here: body validation, not a proxy).
  const login = await send('POST', '/auth/login')
  t.equal(login.status, 400)
  t.equal(envelope(login.body).code, ErrorCatalog.VALIDATION_FAILED.code)
  // Paths are case-sensitive: /AUTH is not the gateway's, it is an ordinary path of the root route.
  const upper = await send('GET', '/AUTH/x')
  t.equal(upper.status, 200)
  t.equal((JSON.parse(upper.body) as Echo).url, '/AUTH/x')
  t.equal(root.seen.length, 1)
})
