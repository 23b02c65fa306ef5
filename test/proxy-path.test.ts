import t from 'tap'
import { normalisePath, type PathRejection } from '../src/proxy/path.js'

// [raw request-target, expected path (query '') | expected rejection]
type Case = [string, { path: string, query?: string } | PathRejection]

const cases: Case[] = [
  // clean paths pass as they are
  ['/api/orders', { path: '/api/orders' }],
  ['/', { path: '/' }],
  ['/api/orders/', { path: '/api/orders/' }],
  ['/api/v1.2/a-b_c~d', { path: '/api/v1.2/a-b_c~d' }],
  ["/api/!$&'()*+,=:@", { path: "/api/!$&'()*+,=:@" }],
  ['/a/...', { path: '/a/...' }],
  ['/a/.hidden', { path: '/a/.hidden' }],
  ['/a/..b', { path: '/a/..b' }],
  // merged slashes
  ['//api//orders', { path: '/api/orders' }],
  ['//', { path: '/' }],
  ['/api/orders//', { path: '/api/orders/' }],
  // dot segments, raw and encoded
  ['/api/./orders', { path: '/api/orders' }],
  ['/public/../api/orders', { path: '/api/orders' }],
  ['/public/%2e%2e/api/orders', { path: '/api/orders' }],
  ['/public/%2E%2E/api', { path: '/api' }],
  ['/public/.%2e/api', { path: '/api' }],
  ['/public/%2e./api', { path: '/api' }],
  ['/public/%2e/../api', { path: '/api' }],
  ['/a/b/.', { path: '/a/b/' }],
  ['/a/b/..', { path: '/a/' }],
  ['/a/..', { path: '/' }],
  ['/.', { path: '/' }],
  ['/..', 'above-root'],
  ['/a/b/../../..', 'above-root'],
  ['/public/../../api', 'above-root'],
  ['/%2e%2e/api', 'above-root'],
  // unreserved escapes decoded, others kept with upper-case hex
  ['/%61pi/orders', { path: '/api/orders' }],
  ['/api/%7Euser', { path: '/api/~user' }],
  ['/api/%E4%BD%A0', { path: '/api/%E4%BD%A0' }],
  ['/api/%e4%bd%a0', { path: '/api/%E4%BD%A0' }],
  ['/api/a%20b', { path: '/api/a%20b' }],
  ['/api/%3f%23', { path: '/api/%3F%23' }],
  ['/api/%f0%9f%98%80', { path: '/api/%F0%9F%98%80' }],
  // encoded separators, controls, path parameters, percent
  ['/public/..%2fapi', 'encoded-slash'],
  ['/api%2forders', 'encoded-slash'],
  ['/api%2Forders', 'encoded-slash'],
  ['/api%5corders', 'encoded-slash'],
  ['/%00', 'encoded-control'],
  ['/api/x%0a', 'encoded-control'],
  ['/api/x%7f', 'encoded-control'],
  ['/api%3bx=1/orders', 'path-parameter'],
  ['/public/%252e%252e/api', 'encoded-percent'],
  // malformed escapes and UTF-8
  ['/api/%zz', 'bad-escape'],
  ['/api/%2', 'bad-escape'],
  ['/api/%', 'bad-escape'],
  ['/api/%2?x', 'bad-escape'],
  ['/api/%E4%BD', 'bad-utf8'],
  ['/api/%E4x', 'bad-utf8'],
  ['/%C0%AE%C0%AE/api', 'bad-utf8'],
  ['/api/%80', 'bad-utf8'],
  ['/api/%ED%A0%80', 'bad-utf8'],
  ['/api/%F4%90%80%80', 'bad-utf8'],
  ['/api/%E4%BD/%A0', 'bad-utf8'],
  // raw characters
  ['/api;x=1/orders', 'path-parameter'],
  ['/api/orders;jsessionid=1', 'path-parameter'],
  ['/api\\orders', 'backslash'],
  ['/api/你', 'non-ascii'],
  ['/api/\u00e9', 'non-ascii'],
  ['/api/\u0000', 'invalid-char'],
  ['/api/a b', 'invalid-char'],
  ['/api/\t', 'invalid-char'],
  ['/api/\u007f', 'invalid-char'],
  ['/api/#frag', 'invalid-char'],
  ['/api/<x>', 'invalid-char'],
  ['/api/{x}', 'invalid-char'],
  // not origin-form
  ['', 'not-origin-form'],
  ['*', 'not-origin-form'],
  ['%00', 'not-origin-form'],
  ['http://evil/x', 'not-origin-form'],
  ['api/orders', 'not-origin-form'],
  ['?x=1', 'not-origin-form'],
  // the query is untouched, whatever it holds
  ['/api/orders?x=1', { path: '/api/orders', query: '?x=1' }],
  ['/api/orders?path=/../..%2f&a=%zz;b', { path: '/api/orders', query: '?path=/../..%2f&a=%zz;b' }],
  ['/public/../api?q=..', { path: '/api', query: '?q=..' }],
  ['/api/./?', { path: '/api/', query: '?' }],
  ['/.?q', { path: '/', query: '?q' }]
]

t.test('every spelling normalises to one path or is rejected', async (t) => {
  for (const [raw, expected] of cases) {
    const got = normalisePath(raw)
    if (typeof expected === 'string') {
      t.same(got, { ok: false, reason: expected }, `${JSON.stringify(raw)} is rejected (${expected})`)
    } else {
      t.same(got, { ok: true, path: expected.path, query: expected.query ?? '' }, `${JSON.stringify(raw)} → ${expected.path}`)
    }
  }
})

t.test('no spelling of a protected path lands under a public prefix', async (t) => {
  // Anything that names /api/orders must come out as /api/orders or be refused,
  // so a `public` route on /public never sees it.
  const spellings = [
    '/public/../api/orders', '/public/%2e%2e/api/orders', '/public/%2E%2e/api/orders',
    '/public/.%2E/api/orders', '/public//../api/orders', '/public/./../api/orders',
    '/public/..%2fapi/orders', '/public/..%5capi/orders', '/public\\..\\api/orders',
    '/public/%252e%252e/api/orders', '/public;/../api/orders', '/public/%c0%ae%c0%ae/api/orders'
  ]
  for (const raw of spellings) {
    const got = normalisePath(raw)
    if (got.ok) t.equal(got.path, '/api/orders', `${raw} resolves to the protected path itself`)
    else t.pass(`${raw} is rejected (${got.reason})`)
  }
})

t.test('normalising is idempotent: an output normalises to itself', async (t) => {
  for (const [raw, expected] of cases) {
    if (typeof expected === 'string') continue
    const once = normalisePath(raw)
    if (!once.ok) { t.fail(`${raw} should normalise`); continue }
    t.same(normalisePath(once.path + once.query), once, `${raw} is stable`)
  }
})

t.test('a clean path comes back unchanged', async (t) => {
  const raw = '/api/orders/123'
  const got = normalisePath(raw)
  t.ok(got.ok)
  if (got.ok) t.equal(got.path, raw)
})

t.test('rejections carry no per-request state', async (t) => {
  // Rejections are shared constants: the reason is all a log line needs.
  t.equal(normalisePath('/..'), normalisePath('/a/../..'))
  t.ok(Object.isFrozen(normalisePath('*')))
})
