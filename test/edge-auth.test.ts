/**
 * End to end over real sockets: every way a token is refused is a 401 envelope
 * whose code says why, with no library text, and the upstream never sees the call.
 */
import { createHmac } from 'node:crypto'
import t from 'tap'
import { request } from 'undici'
import { ErrorCatalog, type ErrorName } from '../src/errors.js'
import { startGateway, TEST_JWT_SECRET } from './helpers/gateway.js'
import { startEcho, type Echo } from './helpers/upstream.js'

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')
const decode = (part: string) => JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>
const hs256 = (input: string, secret: string) => createHmac('sha256', secret).update(input).digest('base64url')

/** A JWT with this header and payload, HS256-signed with `secret` (or unsigned when null). */
function forge (header: Record<string, unknown>, payload: Record<string, unknown>, secret: string | null): string {
  const input = `${b64(header)}.${b64(payload)}`
  return secret === null ? `${input}.` : `${input}.${hs256(input, secret)}`
}

const upstream = await startEcho(t, 'stable')
const { gateway, url, adminUrl } = await startGateway(t, {
  routes: [
    { name: 'api', prefix: '/api', auth: 'required', upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] },
    { name: 'feed', prefix: '/feed', auth: 'optional', upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] },
    { name: 'pub', prefix: '/pub', auth: 'public', upstreams: [{ name: 'stable', url: upstream.url, weight: 1 }] }
  ]
})
const tokens = gateway.snapshot().tokens
const good = tokens.signAccess({ openid: 'oAlice', appid: 'wx00000000000demo0', fid: 'fam-alice' }).token
const [goodHeader = '', goodPayload = ''] = good.split('.')
const header = decode(goodHeader)
const claims = decode(goodPayload)
const now = Math.floor(Date.now() / 1000)

async function call (path: string, authorization?: string) {
  const before = upstream.seen.length
  const res = await request(`${url}${path}`, { headers: authorization === undefined ? {} : { authorization } })
  const text = await res.body.text()
  return { status: res.statusCode, text, reachedUpstream: upstream.seen.length > before, echo: upstream.seen.at(-1) }
}

const cases: Array<[string, string | undefined, ErrorName]> = [
  ['no Authorization header', undefined, 'TOKEN_MISSING'],
  ['Basic scheme (no Bearer token)', 'Basic b2FsaWNlOnB3', 'TOKEN_MISSING'],
  ['a bare token, no scheme', 'eyJhbGciOi', 'TOKEN_MISSING'],
  ['Bearer without a token', 'Bearer', 'TOKEN_MALFORMED'],
  ['not a JWT', 'Bearer not-a-jwt', 'TOKEN_MALFORMED'],
  ['garbage segments', 'Bearer a.b.c', 'TOKEN_MALFORMED'],
  ['alg none, unsigned', `Bearer ${forge({ ...header, alg: 'none' }, claims, null)}`, 'TOKEN_BAD_SIGNATURE'],
  ['alg none with a signature', `Bearer ${forge({ ...header, alg: 'none' }, claims, TEST_JWT_SECRET)}`, 'TOKEN_BAD_SIGNATURE'],
  ['signed with another key', `Bearer ${forge(header, claims, 'another-secret-0123456789abcdef-012345')}`, 'TOKEN_BAD_SIGNATURE'],
  ['payload tampered after signing', `Bearer ${goodHeader}.${b64({ ...claims, openid: 'oMallory', sub: 'oMallory' })}.${good.split('.')[2] ?? ''}`, 'TOKEN_BAD_SIGNATURE'],
  ['signature stripped', `Bearer ${goodHeader}.${goodPayload}.`, 'TOKEN_BAD_SIGNATURE'],
  ['wrong issuer', `Bearer ${forge(header, { ...claims, iss: 'someone-else' }, TEST_JWT_SECRET)}`, 'TOKEN_CLAIMS_INVALID'],
  ['wrong audience', `Bearer ${forge(header, { ...claims, aud: 'web' }, TEST_JWT_SECRET)}`, 'TOKEN_CLAIMS_INVALID'],
  ['expired (past the clock skew)', `Bearer ${forge(header, { ...claims, iat: now - 3600, exp: now - 120 }, TEST_JWT_SECRET)}`, 'TOKEN_EXPIRED'],
  ['not valid before a future nbf', `Bearer ${forge(header, { ...claims, nbf: now + 600 }, TEST_JWT_SECRET)}`, 'TOKEN_NOT_YET_VALID'],
  ['unknown kid', `Bearer ${forge({ ...header, kid: 'k9' }, claims, TEST_JWT_SECRET)}`, 'TOKEN_CLAIMS_INVALID'],
  ['no kid', `Bearer ${forge({ alg: 'HS256', typ: 'JWT' }, claims, TEST_JWT_SECRET)}`, 'TOKEN_CLAIMS_INVALID'],
  ['a refresh-typed token', `Bearer ${forge(header, { ...claims, typ: 'refresh' }, TEST_JWT_SECRET)}`, 'TOKEN_CLAIMS_INVALID']
]

t.test('forged and missing tokens: 401 envelope naming the reason, upstream never called', async (t) => {
  for (const [name, authorization, expected] of cases) {
    const r = await call('/api/orders', authorization)
    const entry = ErrorCatalog[expected]
    t.equal(r.status, 401, `${name}: 401`)
    t.same(JSON.parse(r.text), { code: entry.code, message: entry.message, data: null }, `${name}: envelope ${entry.code}`)
    t.notOk(r.reachedUpstream, `${name}: not forwarded`)
    // No library wording leaks to the client.
    t.notMatch(r.text, /fast-jwt|TokenError|The token|invalid signature|jwt/i, `${name}: no library text`)
  }
})

t.test('a revoked token is refused with TOKEN_REVOKED', async (t) => {
  const signed = tokens.signAccess({ openid: 'oBob', appid: 'wx00000000000demo0', fid: 'fam-bob' })
  t.equal((await call('/api/x', `Bearer ${signed.token}`)).status, 200, 'valid before revocation')
  await gateway.store.revokeAccessToken(signed.jti, signed.expiresAtMs)
  const r = await call('/api/x', `Bearer ${signed.token}`)
  t.equal(r.status, 401)
  t.equal(JSON.parse(r.text).code, ErrorCatalog.TOKEN_REVOKED.code)
  t.notOk(r.reachedUpstream)
})

t.test('a valid token reaches the upstream with the caller identity', async (t) => {
  const r = await call('/api/orders?x=1', `Bearer ${good}`)
  t.equal(r.status, 200)
  const echo = JSON.parse(r.text) as Echo
  t.equal(echo.url, '/api/orders?x=1')
  t.equal(echo.headers['x-openid'], 'oAlice')
  t.equal(echo.headers['x-appid'], 'wx00000000000demo0')
  t.equal(echo.headers.authorization, undefined, 'Authorization is not forwarded by default')
})

t.test('the bearer scheme is case-insensitive', async (t) => {
  t.equal((await call('/api/x', `bearer ${good}`)).status, 200)
})

t.test('optional route: anonymous is forwarded without identity, a bad token is still refused', async (t) => {
  const anon = await call('/feed/list')
  t.equal(anon.status, 200)
  t.equal((JSON.parse(anon.text) as Echo).headers['x-openid'], undefined)
  const bad = await call('/feed/list', `Bearer ${forge(header, claims, 'another-secret-0123456789abcdef-012345')}`)
  t.equal(bad.status, 401)
  t.equal(JSON.parse(bad.text).code, ErrorCatalog.TOKEN_BAD_SIGNATURE.code)
  t.notOk(bad.reachedUpstream)
  const known = await call('/feed/list', `Bearer ${good}`)
  t.equal((JSON.parse(known.text) as Echo).headers['x-openid'], 'oAlice')
})

t.test('public route: no token needed, a token sent is neither checked nor turned into identity', async (t) => {
  const r = await call('/pub/banner', 'Bearer a.b.c')
  t.equal(r.status, 200)
  t.equal((JSON.parse(r.text) as Echo).headers['x-openid'], undefined)
})

t.test('rejections are counted by reason', async (t) => {
  const text = await (await request(`${adminUrl}/metrics`)).body.text()
  t.match(text, /wegate_token_rejections_total\{reason="bad_signature"\} \d+/)
  t.match(text, /wegate_token_rejections_total\{reason="missing"\} \d+/)
})
