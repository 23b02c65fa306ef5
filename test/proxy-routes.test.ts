import t from 'tap'
import { parseConfig } from '../src/config/load.js'
import type { RouteConfig } from '../src/config/schema.js'
import { normalisePath } from '../src/proxy/path.js'
import { buildRouteTable, RouteTableError } from '../src/proxy/routes.js'

/** A route as the loader would hand it over (defaults filled). */
function route (name: string, prefix: string, extra: Partial<RouteConfig> = {}): RouteConfig {
  return {
    name,
    prefix,
    auth: 'required',
    timeout: 30_000,
    bodyLimit: 1_048_576,
    stripPrefix: false,
    forwardAuthorization: false,
    injectPhone: false,
    websocket: { idleTimeout: 60_000 },
    upstreams: [{ name: 'stable', url: 'http://127.0.0.1:9501', weight: 1 }],
    ...extra
  }
}

t.test('longest prefix wins, on segment boundaries only', async (t) => {
  const table = buildRouteTable([
    route('api', '/api'),
    route('orders', '/api/orders'),
    route('admin', '/api/orders/admin/'),
    route('public', '/public', { auth: 'public' })
  ])
  const cases: Array<[string, string | undefined]> = [
    ['/api', 'api'],
    ['/api/', 'api'],
    ['/api/x', 'api'],
    ['/apix', undefined],
    ['/api/orders', 'orders'],
    ['/api/orders/', 'orders'],
    ['/api/orders/123', 'orders'],
    ['/api/ordersx', 'api'],
    ['/api/orders/admin', 'admin'],
    ['/api/orders/admin/x/y', 'admin'],
    ['/api/orders/administrator', 'orders'],
    ['/public/a', 'public'],
    ['/', undefined],
    ['/other', undefined]
  ]
  for (const [path, name] of cases) t.equal(table.match(path)?.name, name, `${path} → ${name ?? 'no route'}`)
})

t.test('a prefix of / matches everything no longer prefix does', async (t) => {
  const table = buildRouteTable([route('root', '/'), route('api', '/api')])
  t.equal(table.match('/')?.name, 'root')
  t.equal(table.match('/anything/at/all')?.name, 'root')
  t.equal(table.match('/apix')?.name, 'root')
  t.equal(table.match('/api/x')?.name, 'api')
})

t.test('a root route does not receive the gateway\'s own /auth and /.well-known paths', async (t) => {
  const table = buildRouteTable([route('root', '/'), route('api', '/api')])
  for (const p of ['/auth', '/auth/', '/auth/login/', '/auth/x/y', '/.well-known', '/.well-known/openid-configuration']) {
    t.equal(table.match(p), undefined, `${p}: no route`)
  }
  for (const p of ['/authx', '/auth-z', '/AUTH/x', '/.well-knownx', '/a/auth/x']) t.equal(table.match(p)?.name, 'root', `${p}: root`)
})

t.test('prefixes are case-sensitive', async (t) => {
  const table = buildRouteTable([route('orders', '/api/Orders')])
  t.equal(table.match('/api/Orders/1')?.name, 'orders')
  t.equal(table.match('/api/orders/1'), undefined)
})

t.test('a trailing slash in the configured prefix changes nothing', async (t) => {
  const table = buildRouteTable([route('orders', '/api/orders/')])
  const r = table.match('/api/orders')
  t.equal(r?.name, 'orders')
  t.equal(r?.prefix, '/api/orders')
  t.equal(table.match('/api/ordersx'), undefined)
})

t.test('a path that climbs out of a public route lands on the protected one', async (t) => {
  const table = buildRouteTable([
    route('public', '/public', { auth: 'public' }),
    route('api', '/api', { auth: 'required' })
  ])
  for (const raw of ['/public/../api/orders', '/public/%2e%2e/api/orders', '//public/.%2E/api/orders']) {
    const n = normalisePath(raw)
    t.ok(n.ok, raw)
    if (n.ok) t.equal(table.match(n.path)?.auth, 'required', `${raw} needs a token`)
  }
})

t.test('upstream URLs are parsed once into origin and base path', async (t) => {
  const table = buildRouteTable([route('r', '/api', {
    upstreams: [
      { name: 'a', url: 'http://orders-v1:8080', weight: 1 },
      { name: 'b', url: 'https://orders-v2.example.com/v2/', weight: 1 },
      { name: 'c', url: 'http://[::1]:9000/base', weight: 0 }
    ]
  })])
  const ups = table.get('r')?.upstreams ?? []
  t.same(ups.map((u) => [u.index, u.name, u.origin, u.basePath, u.weight]), [
    [0, 'a', 'http://orders-v1:8080', '', 1],
    [1, 'b', 'https://orders-v2.example.com', '/v2', 1],
    [2, 'c', 'http://[::1]:9000', '/base', 0]
  ])
})

t.test('upstreamPath joins base path and path without // and never returns empty', async (t) => {
  const ups = [
    { name: 'plain', url: 'http://u:1', weight: 1 },
    { name: 'based', url: 'http://u:1/v1/', weight: 1 }
  ]
  const keep = buildRouteTable([route('keep', '/api/orders', { upstreams: ups })]).routes[0]
  const strip = buildRouteTable([route('strip', '/api/orders/', { upstreams: ups, stripPrefix: true })]).routes[0]
  const rootStrip = buildRouteTable([route('root', '/', { upstreams: ups, stripPrefix: true })]).routes[0]
  const [plain, based] = keep.upstreams
  const cases: Array<[typeof keep, string, typeof plain, string]> = [
    [keep, '/api/orders', plain, '/api/orders'],
    [keep, '/api/orders/1', based, '/v1/api/orders/1'],
    [keep, '/api/orders/', based, '/v1/api/orders/'],
    [strip, '/api/orders', plain, '/'],
    [strip, '/api/orders/', plain, '/'],
    [strip, '/api/orders/1', plain, '/1'],
    [strip, '/api/orders', based, '/v1'],
    [strip, '/api/orders/', based, '/v1/'],
    [strip, '/api/orders/1/x', based, '/v1/1/x'],
    [rootStrip, '/', plain, '/'],
    [rootStrip, '/a/b', based, '/v1/a/b']
  ]
  for (const [r, path, up, expected] of cases) {
    t.equal(r.upstreamPath(path, up), expected, `${r.name}: ${path} via ${up.name} → ${expected}`)
  }
})

t.test('a compiled route carries its auth, settings and picker', async (t) => {
  const table = buildRouteTable([route('orders', '/api/orders', {
    auth: 'optional',
    timeout: 10_000,
    upstreams: [
      { name: 'stable', url: 'http://a:1', weight: 95 },
      { name: 'canary', url: 'http://b:1', weight: 5 }
    ],
    canary: { sticky: 'openid', header: 'X-Canary', openids: ['oTester'] }
  })])
  const r = table.match('/api/orders/1')
  t.equal(r?.auth, 'optional')
  t.equal(r?.config.timeout, 10_000)
  t.equal(r?.picker.headerName, 'x-canary')
  t.equal(r?.picker.pick({ ip: '1.2.3.4', openid: 'oTester' }), 1)
  t.equal(table.get('orders'), r)
  t.equal(table.get('nope'), undefined)
})

t.test('rollBack moves traffic off the upstream until the table is rebuilt', async (t) => {
  const routes = [route('orders', '/api', {
    upstreams: [
      { name: 'stable', url: 'http://a:1', weight: 50 },
      { name: 'canary', url: 'http://b:1', weight: 50 }
    ],
    canary: { sticky: 'none', openids: [], rollback: { upstream: 'canary', errorRate: 0.01, window: 60_000, minRequests: 100 } }
  })]
  const r = buildRouteTable(routes).routes[0]
  t.equal(r.rollbackUpstream?.index, 1)
  t.equal(buildRouteTable([route('plain', '/p')]).routes[0].rollbackUpstream, undefined)
  t.equal(r.picker.pick({ ip: 'x', random: 0.1 }), 1, 'canary owns the low half')
  t.equal(r.rollBack(1), true)
  t.equal(r.rollBack(1), false, 'already rolled back')
  t.same(r.picker.weights, [50, 0])
  for (const random of [0, 0.1, 0.49, 0.5, 0.99]) t.equal(r.picker.pick({ ip: 'x', random }), 0)
  const fresh = buildRouteTable(routes).routes[0]
  t.same(fresh.picker.weights, [50, 50], 'a new snapshot starts from the config')
  t.equal(fresh.restore(), false, 'nothing to restore')
  t.equal(r.restore(), true, 'restore: back to the configured weights (the config was re-applied)')
  t.same(r.picker.weights, [50, 50])
  t.equal(r.picker.pick({ ip: 'x', random: 0.1 }), 1)
})

t.test('a route set the loader should have refused throws with its path', async (t) => {
  const bad: Array<[RouteConfig[], string]> = [
    [[route('a', '/api'), route('b', '/api/')], 'routes[1].prefix'],
    [[route('a', '/'), route('b', '/')], 'routes[1].prefix'],
    [[route('a', '/x'), route('a', '/y')], 'routes[1].name'],
    [[route('a', '/x', { upstreams: [{ name: 's', url: 'http://h:1/p?q=1', weight: 1 }] })], 'routes[0].upstreams[0].url'],
    [[route('a', '/x', { upstreams: [{ name: 's', url: 'http://h:1/#f', weight: 1 }] })], 'routes[0].upstreams[0].url'],
    [[route('a', '/x', { upstreams: [{ name: 's', url: 'http://u:p@h:1', weight: 1 }] })], 'routes[0].upstreams[0].url'],
    [[route('a', '/x', { upstreams: [{ name: 's', url: 'http://h:99999', weight: 1 }] })], 'routes[0].upstreams[0].url'],
    [[route('a', '/x', { canary: { sticky: 'none', openids: [], rollback: { upstream: 'ghost', errorRate: 0.01, window: 60_000, minRequests: 100 } } })], 'routes[0].canary.rollback.upstream']
  ]
  for (const [routes, path] of bad) {
    t.throws(() => buildRouteTable(routes), new RouteTableError(path, ''), path)
  }
})

t.test('the routes of a real gateway.yaml compile', async (t) => {
  const config = parseConfig(`
wechat: { apps: [{ appId: wx1, secret: s }] }
tokens: { keys: [{ kid: k1, secret: "0123456789abcdef0123456789abcdef" }] }
routes:
  - name: orders
    prefix: /api/orders
    stripPrefix: true
    upstreams:
      - { name: stable, url: "http://127.0.0.1:9501/svc", weight: 95 }
      - { name: canary, url: "http://127.0.0.1:9502", weight: 5 }
    canary: { header: X-Canary, openids: [oTester] }
  - name: public
    prefix: /public/
    auth: public
    upstreams: [{ name: stable, url: "http://127.0.0.1:9501", weight: 1 }]
`, {})
  const table = buildRouteTable(config.routes)
  const r = table.match('/api/orders/7')
  t.equal(r?.name, 'orders')
  t.equal(r?.auth, 'required', 'auth defaults to required')
  t.equal(r?.picker.pick({ ip: '10.0.0.1', headerValue: 'stable', openid: 'oTester' }), 0)
  t.equal(r?.upstreamPath('/api/orders/7', r.upstreams[0]), '/svc/7')
  t.equal(table.match('/public')?.auth, 'public')
})
