/**
 * End to end: the upstream trusts X-OpenID / X-UnionID / X-AppID, so no client
 * spelling of them survives; X-Forwarded-* follow trustProxy; hop-by-hop and
 * Connection-listed headers are dropped both ways, but a client cannot make the
 * gateway drop the headers it sets itself; Authorization only where the route says.
 */
import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'
import { rawRequest, startEcho, startServer, type Echo } from './helpers/upstream.js'

const upstream = await startEcho(t, 'stable')
const routes = [
  { name: 'api', prefix: '/api', auth: 'required', upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] },
  { name: 'pub', prefix: '/pub', auth: 'public', upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] },
  { name: 'legacy', prefix: '/legacy', auth: 'required', forwardAuthorization: true, upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] }
]
const { gateway, url } = await startGateway(t, { routes })
const signed = gateway.snapshot().tokens.signAccess({ openid: 'oAlice', appid: 'wx00000000000demo0', fid: 'fam-a' })
const bearer = `Bearer ${signed.token}`
const host = new URL(url).host

/** Every spelling a client might use to smuggle an identity header. */
const SPOOF = [
  'X-OpenID: oMallory', 'x-openid: oMallory2', 'X-OPENID: oMallory3', 'X_OpenID: oMallory4', 'x_openid: oMallory5',
  'X-UnionID: uMallory', 'X_UNIONID: uMallory2', 'X-AppID: wxMallory', 'x_appid: wxMallory2',
  // WeChat Cloud Hosting's own identity headers: a backend moved from CloudBase may trust them
  'X-WX-OPENID: oMallory6', 'x_wx_openid: oMallory7', 'X-WX-UNIONID: uMallory3', 'X-WX-APPID: wxMallory3', 'X-WX-FROM-OPENID: oMallory8'
]

async function raw (path: string, extra: string[]): Promise<Echo> {
  const res = await rawRequest(url, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${extra.map((h) => h + '\r\n').join('')}\r\n`)
  if (res.status !== 200) throw new Error(`${path}: expected 200, got ${res.status} ${res.body}`)
  return JSON.parse(res.body) as Echo
}

function identityValues (echo: Echo): string[] {
  const out: string[] = []
  for (const [name, value] of Object.entries(echo.headers)) {
    if (/^x[-_]((wx[-_](from[-_])?)?)(openid|unionid|appid)$/i.test(name)) out.push(`${name}=${String(value)}`)
  }
  return out.sort()
}

t.test('protected route: every spoofed spelling is removed and the token identity set', async (t) => {
  const echo = await raw('/api/me', [`Authorization: ${bearer}`, ...SPOOF])
  t.same(identityValues(echo), ['x-appid=wx00000000000demo0', 'x-openid=oAlice'], 'only the verified identity')
  t.notMatch(JSON.stringify(echo.headers), /Mallory/)
  t.equal(echo.rawNames.filter((n) => n.toLowerCase() === 'x-openid').length, 1, 'exactly one X-OpenID')
})

t.test('public route: every spoofed spelling is removed and none is set', async (t) => {
  const echo = await raw('/pub/x', SPOOF)
  t.same(identityValues(echo), [])
})

t.test('a client cannot make the gateway drop its own headers by naming them in Connection', async (t) => {
  const echo = await raw('/api/me', [
    `Authorization: ${bearer}`,
    'Connection: x-openid, x-appid, x-request-id, x-forwarded-for, host',
    'X-Request-Id: trace-123'
  ])
  t.equal(echo.headers['x-openid'], 'oAlice')
  t.equal(echo.headers['x-appid'], 'wx00000000000demo0')
  t.equal(echo.headers['x-request-id'], 'trace-123')
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(echo.headers.host, new URL(upstream.url).host)
})

t.test('hop-by-hop and Connection-listed headers from the client do not reach the upstream', async (t) => {
  const echo = await raw('/pub/x', [
    'Connection: close, X-Drop-Me', 'X-Drop-Me: 1', 'Keep-Alive: timeout=5', 'TE: trailers',
    'Proxy-Authorization: Basic Zm9vOmJhcg==', 'Proxy-Connection: keep-alive', 'Upgrade: h2c-not-really', 'X-Keep-Me: yes'
  ])
  for (const h of ['x-drop-me', 'keep-alive', 'te', 'proxy-authorization', 'proxy-connection', 'upgrade']) {
    t.equal(echo.headers[h], undefined, `${h} dropped`)
  }
  t.equal(echo.headers['x-keep-me'], 'yes', 'end-to-end headers kept')
})

t.test('hop-by-hop and Connection-listed headers from the upstream do not reach the client', async (t) => {
  const special = await startServer(t, (_req, res) => {
    res.setHeader('Connection', 'X-Internal')
    res.setHeader('X-Internal', 'secret')
    res.setHeader('Keep-Alive', 'timeout=1')
    res.setHeader('Proxy-Authenticate', 'Basic')
    res.setHeader('X-Visible', 'yes')
    res.end('ok')
  })
  const { url: gw } = await startGateway(t, { routes: [{ name: 'r', prefix: '/', auth: 'public', upstreams: [{ name: 's', url: special.url, weight: 1 }] }] })
  const res = await request(`${gw}/x`)
  t.equal(await res.body.text(), 'ok')
  t.equal(res.headers['x-internal'], undefined)
  t.equal(res.headers['proxy-authenticate'], undefined)
  t.not(res.headers['keep-alive'], 'timeout=1')
  t.equal(res.headers['x-visible'], 'yes')
})

t.test('X-Forwarded-* from an untrusted client are replaced (trustProxy: false)', async (t) => {
  const echo = await raw('/pub/x', ['X-Forwarded-For: 6.6.6.6', 'X-Forwarded-Proto: https', 'X-Forwarded-Host: evil.example', 'Forwarded: for=6.6.6.6', 'X-Real-IP: 6.6.6.6'])
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(echo.headers['x-forwarded-proto'], 'http')
  t.equal(echo.headers['x-forwarded-host'], host)
  t.equal(echo.headers.forwarded, undefined)
  t.equal(echo.headers['x-real-ip'], undefined)
})

/** Client-IP, scheme, port, prefix and original-URL claims a backend framework may believe. */
const FORWARDING_SPOOF = [
  'X-Forwarded-Port: 8443', 'X-Forwarded-Prefix: /admin', 'X-Forwarded-Server: evil', 'X-Forwarded-Ssl: on',
  'X-Forwarded-Scheme: https', 'X-Forwarded-Uri: /admin', 'X-Original-Forwarded-For: 6.6.6.6',
  'X-Client-IP: 6.6.6.6', 'True-Client-IP: 6.6.6.6', 'CF-Connecting-IP: 6.6.6.6', 'Fastly-Client-IP: 6.6.6.6',
  'X-Cluster-Client-IP: 6.6.6.6', 'X-Originating-IP: 6.6.6.6', 'X-Remote-IP: 6.6.6.6', 'X-Remote-Addr: 6.6.6.6',
  'X-Original-URL: /admin/users', 'X-Rewrite-URL: /admin/users',
  // CGI-style servers read the underscore spellings as the same variables
  'X_Forwarded_For: 6.6.6.6', 'x_forwarded_proto: https', 'X_Forwarded_Host: evil.example', 'x-forwarded_port: 1',
  'X_Real_IP: 6.6.6.6', 'x_client_ip: 6.6.6.6', 'True_Client_IP: 6.6.6.6', 'cf_connecting_ip: 6.6.6.6',
  'X_Original_URL: /admin', 'x_rewrite_url: /admin', 'X_Original_Forwarded_For: 6.6.6.6'
]

/** Every header the upstream got that is not one the gateway set or a harmless end-to-end one. */
function forwardingLeft (echo: Echo): string[] {
  return Object.keys(echo.headers).filter((n) => /forward|client|connecting|real|original|rewrite|remote/i.test(n)).sort()
}

t.test('regression: X-Forwarded-Port/-Prefix, CDN client-IP headers, X-Original-URL and underscore spellings passed through from an untrusted client', async (t) => {
  const echo = await raw('/pub/x', FORWARDING_SPOOF)
  t.same(forwardingLeft(echo), ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto'], 'only the three the gateway sets')
  t.equal(echo.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(echo.headers['x-forwarded-proto'], 'http')
  t.equal(echo.headers['x-forwarded-host'], host)
  t.notMatch(JSON.stringify(echo.headers), /6\.6\.6\.6|admin|evil|8443/)
  t.equal(echo.url, '/pub/x', 'the path is the one that was authorised')
})

t.test('from a trusted proxy: its X-Forwarded-* family is kept; client-IP claims, URL overrides and underscore spellings are not', async (t) => {
  const { url: gw } = await startGateway(t, { trustProxy: ['127.0.0.1/32'], routes })
  const lines = ['X-Forwarded-For: 203.0.113.7', 'X-Forwarded-Proto: https', ...FORWARDING_SPOOF]
  const res = await rawRequest(gw, `GET /pub/x HTTP/1.1\r\nHost: gw.internal\r\nConnection: close\r\n${lines.map((h) => h + '\r\n').join('')}\r\n`)
  const echo = JSON.parse(res.body) as Echo
  t.same(forwardingLeft(echo), [
    'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-proto',
    'x-forwarded-scheme', 'x-forwarded-server', 'x-forwarded-ssl', 'x-forwarded-uri', 'x-original-forwarded-for'
  ])
  t.equal(echo.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1', 'extended, not replaced by the underscore copy')
  t.equal(echo.headers['x-forwarded-port'], '8443')
  t.equal(echo.headers['x-forwarded-prefix'], '/admin')
  t.equal(echo.headers['x-original-forwarded-for'], '6.6.6.6')
  for (const name of ['x-client-ip', 'true-client-ip', 'cf-connecting-ip', 'fastly-client-ip', 'x-original-url', 'x-rewrite-url', 'x_forwarded_for', 'x-forwarded_port', 'x_real_ip']) {
    t.equal(echo.headers[name], undefined, `${name} dropped`)
  }
})

t.test('X-Forwarded-* from a trusted proxy are extended (trustProxy: [127.0.0.1/32])', async (t) => {
  const { url: gw } = await startGateway(t, { trustProxy: ['127.0.0.1/32'], routes })
  const res = await rawRequest(gw, 'GET /pub/x HTTP/1.1\r\nHost: gw.internal\r\nConnection: close\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: shop.example.com\r\n\r\n')
  const echo = JSON.parse(res.body) as Echo
  t.equal(echo.headers['x-forwarded-for'], '203.0.113.7, 127.0.0.1')
  t.equal(echo.headers['x-forwarded-proto'], 'https')
  t.equal(echo.headers['x-forwarded-host'], 'shop.example.com')
  const plain = JSON.parse((await rawRequest(gw, 'GET /pub/x HTTP/1.1\r\nHost: gw.internal\r\nConnection: close\r\n\r\n')).body) as Echo
  t.equal(plain.headers['x-forwarded-for'], '127.0.0.1')
  t.equal(plain.headers['x-forwarded-proto'], 'http')
  t.equal(plain.headers['x-forwarded-host'], 'gw.internal')
})

t.test('Authorization reaches the upstream only on a route with forwardAuthorization: true', async (t) => {
  t.equal((await raw('/api/x', [`Authorization: ${bearer}`])).headers.authorization, undefined)
  t.equal((await raw('/pub/x', [`Authorization: ${bearer}`])).headers.authorization, undefined)
  t.equal((await raw('/legacy/x', [`Authorization: ${bearer}`])).headers.authorization, bearer)
})

t.test('X-Request-Id: a sane client id is kept end to end, otherwise one is minted', async (t) => {
  const kept = await request(`${url}/pub/x`, { headers: { 'x-request-id': 'trace-abc.1' } })
  t.equal(kept.headers['x-request-id'], 'trace-abc.1')
  t.equal((await kept.body.json() as Echo).headers['x-request-id'], 'trace-abc.1')
  const minted = await request(`${url}/pub/x`, { headers: { 'x-request-id': 'bad id with spaces' } })
  const id = minted.headers['x-request-id']
  t.match(id, /^[0-9a-f-]{36}$/, 'a UUID replaces an unsafe id')
  t.equal((await minted.body.json() as Echo).headers['x-request-id'], id, 'upstream sees the same id')
})

t.test('regression: the upstream\'s own X-Request-Id replaced the gateway\'s in the response', async (t) => {
  const received: string[] = []
  const own = await startServer(t, (req, res) => {
    received.push(String(req.headers['x-request-id']))
    res.setHeader('X-Request-Id', 'upstream-own-id')
    res.end('ok')
  })
  const { url: gw, logs } = await startGateway(t, { routes: [{ name: 'root', prefix: '/', auth: 'public', upstreams: [{ name: 's', url: own.url, weight: 1 }] }] })
  const accessId = (path: string) => logs.lines.find((l) => l.msg === 'access' && l.path === path)?.reqId

  const sent = await request(`${gw}/traced`, { headers: { 'x-request-id': 'trace-abc.2' } })
  t.equal(await sent.body.text(), 'ok')
  t.equal(sent.headers['x-request-id'], 'trace-abc.2', 'the client sees its own id, not the upstream\'s')
  t.equal(received.at(-1), 'trace-abc.2')
  t.equal(accessId('/traced'), 'trace-abc.2', 'the access line has the same id')

  const minted = await request(`${gw}/minted`)
  await minted.body.dump()
  const id = minted.headers['x-request-id']
  t.match(id, /^[0-9a-f-]{36}$/)
  t.equal(received.at(-1), id, 'the upstream was sent the id the client sees')
  t.equal(accessId('/minted'), id, 'and so is the access line')
})

/** Host overrides and `_`-spelled framing headers only a misreading upstream would act on. */
const OVERRIDE_SPOOF = [
  'X-Host: evil.example', 'X-HTTP-Host-Override: evil.example', 'X-Host-Override: evil.example',
  'X-Original-Host: evil.example', 'X-Forwarded-Server: evil.example', 'x_host: evil.example', 'X_Original_Host: evil.example',
  'Transfer_Encoding: chunked', 'transfer_encoding: identity', 'TRANSFER_ENCODING: chunked', 'Content_Length: 5', 'content_length: 0'
]

function overrideLeft (echo: Echo): string[] {
  return Object.keys(echo.headers).filter((n) => /host|server|transfer|length/i.test(n)).sort()
}

t.test('regression: host-override claims and Transfer_Encoding / Content_Length passed through from an untrusted client', async (t) => {
  const echo = await raw('/pub/x', OVERRIDE_SPOOF)
  t.same(overrideLeft(echo), ['host', 'x-forwarded-host'], 'only the headers the gateway sets')
  t.equal(echo.headers.host, new URL(upstream.url).host)
  t.equal(echo.headers['x-forwarded-host'], host)
  t.notMatch(JSON.stringify(echo.headers), /evil|chunked|identity/)
  // A body with the real Content-Length still arrives whole, with its own framing.
  const res = await rawRequest(url, `POST /pub/x HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\nContent_Length: 1\r\nContent-Length: 5\r\n\r\nhello`)
  const posted = JSON.parse(res.body) as Echo
  t.equal(posted.headers['content-length'], '5')
  t.equal(posted.headers.content_length, undefined)
  t.equal(posted.body, 'hello')
})

t.test('from a trusted proxy: host-override claims are kept, underscore framing headers are not', async (t) => {
  const { url: gw } = await startGateway(t, { trustProxy: ['127.0.0.1/32'], routes })
  const res = await rawRequest(gw, `GET /pub/x HTTP/1.1\r\nHost: gw.internal\r\nConnection: close\r\n${OVERRIDE_SPOOF.map((h) => h + '\r\n').join('')}\r\n`)
  const echo = JSON.parse(res.body) as Echo
  t.same(overrideLeft(echo), ['host', 'x-forwarded-host', 'x-forwarded-server', 'x-host', 'x-host-override', 'x-http-host-override', 'x-original-host'])
  t.equal(echo.headers.host, new URL(upstream.url).host)
})
