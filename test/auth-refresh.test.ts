/**
 * POST /auth/refresh end to end against a real Redis: rotation ("一次一换"),
 * reuse detection revoking the whole family, the grace window, concurrency.
 */
import t from 'tap'
import { bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat, testClock } from './helpers/auth.js'
import type { TestContext } from './helpers/gateway.js'

// 1.5 s: wide enough that ten concurrent refreshes on a loaded CI machine all land inside it
const GRACE_MS = 1500

const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const clock = testClock()
const { url, adminUrl } = await startAuthGateway(t, {
  now: clock.now,
  wechatUrl: wx.url,
  echoUrl,
  redisUrl: redis.url,
  patch: { tokens: { keys: [{ kid: 'k1', secret: 'refresh-test-secret-0123456789abcdef' }], refreshGrace: `${GRACE_MS}ms` } }
})

const refresh = (token: unknown) => post(url + '/auth/refresh', { refreshToken: token })
const api = (token: string) => get(url + '/api/me', bearer(token))

t.test('rotation: a refresh returns a new pair of the same shape; the new access token works', async (t) => {
  const first = await login(url, 'u-rot-1')
  const r = await refresh(first.refreshToken)
  t.equal(r.status, 200)
  const d = r.json?.data
  t.same(Object.keys(d).sort(), Object.keys(first).sort(), 'same shape as login (unionid included)')
  t.equal(d.tokenType, 'Bearer')
  t.equal(d.openid, first.openid)
  t.equal(d.unionid, first.unionid)
  t.not(d.refreshToken, first.refreshToken, 'a new refresh token')
  t.not(d.accessToken, first.accessToken, 'a new access token')
  t.ok(d.refreshExpiresIn <= first.refreshExpiresIn)
  t.equal((await api(d.accessToken)).status, 200)
  t.equal((await api(first.accessToken)).status, 200, 'rotation alone does not revoke the older access token')

  const r2 = await refresh(d.refreshToken)
  t.equal(r2.status, 200, 'the child rotates in turn')

  const plain = await login(url, 'rot-plain-1')
  const p = await refresh(plain.refreshToken)
  t.same(Object.keys(p.json?.data).sort(), ['accessToken', 'expiresIn', 'openid', 'refreshExpiresIn', 'refreshToken', 'tokenType'], 'no unionid key when the user has none')
})

t.test('reuse after the grace window revokes the family, including the latest child and its access tokens', async (t) => {
  const first = await login(url, 'reuse-1')
  const second = (await refresh(first.refreshToken)).json?.data
  const third = (await refresh(second.refreshToken)).json?.data
  t.equal((await api(third.accessToken)).status, 200)
  clock.advance(GRACE_MS + 100)

  const before = await metric(adminUrl, 'wegate_refreshes_total', { result: 'reused' })
  const reused = await refresh(first.refreshToken)
  t.equal(reused.status, 401)
  t.equal(reused.json?.code, 20011, 'REFRESH_REUSED')
  t.equal(await metric(adminUrl, 'wegate_refreshes_total', { result: 'reused' }) - before, 1)

  const latest = await refresh(third.refreshToken)
  t.equal(latest.status, 401, 'the live child of the family is dead too')
  t.equal(latest.json?.code, 20010)
  for (const tok of [first.accessToken, second.accessToken, third.accessToken]) {
    const a = await api(tok)
    t.equal(a.status, 401)
    t.equal(a.json?.code, 20006, 'every access token of the family is revoked')
  }

  const other = await login(url, 'reuse-2')
  t.equal((await api(other.accessToken)).status, 200, 'another login of nobody else is untouched')
})

t.test('within the grace window a repeated refresh gets the same refresh token, not a reuse', async (t) => {
  const first = await login(url, 'grace-1')
  const a = await refresh(first.refreshToken)
  const b = await refresh(first.refreshToken)
  t.equal(a.status, 200)
  t.equal(b.status, 200, 'a retry is not a reuse')
  t.equal(b.json?.data.refreshToken, a.json?.data.refreshToken, 'same child')
  t.equal((await api(b.json?.data.accessToken)).status, 200)
  const next = await refresh(a.json?.data.refreshToken)
  t.equal(next.status, 200, 'the family lives on after a grace hit')
})

t.test('regression: a spent refresh token replayed after its child was spent is reuse, even within the grace window', async (t) => {
  const r1 = await login(url, 'replay-1')
  const r2 = (await refresh(r1.refreshToken)).json?.data
  const r3 = (await refresh(r2.refreshToken)).json?.data
  const replay = await refresh(r1.refreshToken)
  t.equal(replay.status, 401, 'no new pair for R1')
  t.equal(replay.json?.code, 20011, 'REFRESH_REUSED')
  t.equal((await refresh(r2.refreshToken)).json?.code, 20010, 'R2 no longer hands out R3')
  t.equal((await refresh(r3.refreshToken)).json?.code, 20010, 'the live R3 died with its family')
  for (const tok of [r1.accessToken, r2.accessToken, r3.accessToken]) t.equal((await api(tok)).json?.code, 20006, 'access tokens of the family denied')
})

t.test('concurrent refreshes of one token: one rotation, every caller gets the same child', async (t) => {
  const first = await login(url, 'conc-1')
  const rotated = await metric(adminUrl, 'wegate_refreshes_total', { result: 'rotated' })
  const grace = await metric(adminUrl, 'wegate_refreshes_total', { result: 'grace' })
  const all = await Promise.all(Array.from({ length: 10 }, () => refresh(first.refreshToken)))
  t.same(all.map((a) => a.status), Array(10).fill(200))
  t.equal(new Set(all.map((a) => a.json?.data.refreshToken)).size, 1, 'one child')
  t.equal(await metric(adminUrl, 'wegate_refreshes_total', { result: 'rotated' }) - rotated, 1)
  t.equal(await metric(adminUrl, 'wegate_refreshes_total', { result: 'grace' }) - grace, 9)
  const child = all[0]?.json?.data.refreshToken
  t.equal((await refresh(child)).status, 200, 'the shared child still works')
})

t.test('bad refresh tokens and bodies', async (t) => {
  const d = await login(url, 'bad-1')
  const cases: Array<[string, unknown, number, number]> = [
    ['unknown token', 'AAAAAAAAAAAAAAAAAAAAAA.' + 'B'.repeat(43), 401, 20010],
    ['not a refresh token at all', 'garbage', 401, 20010],
    // An access token is longer than any refresh token (256 characters max): a validation error.
    ['an access token', d.accessToken, 400, 40001],
    ['a tampered token', d.refreshToken.slice(0, -2) + (d.refreshToken.endsWith('AA') ? 'BB' : 'AA'), 401, 20010]
  ]
  for (const [what, token, status, code] of cases) {
    const a = await refresh(token)
    t.equal(a.status, status, `${what}: ${status}`)
    t.equal(a.json?.code, code, `${what}: ${code}`)
  }
  for (const [what, body] of [['missing', {}], ['a number', { refreshToken: 1 }], ['empty', { refreshToken: '' }], ['huge', { refreshToken: 'x'.repeat(300) }], ['an array', []]] as Array<[string, unknown]>) {
    const a = await post(url + '/auth/refresh', body)
    t.equal(a.status, 400, `${what}: 400`)
    t.equal(a.json?.code, 40001)
  }
  const plain = await post(url + '/auth/refresh', d.refreshToken, { 'content-type': 'text/plain' }, true)
  t.equal(plain.status, 415)
  t.equal(plain.json?.code, 40015)
  t.equal((await refresh(d.refreshToken)).status, 200, 'the real token was not spent by any of these')
})

/** A gateway on its own moved clock with these token lifetimes. */
async function shortLived (t: TestContext, tokens: Record<string, string>) {
  const shortClock = testClock()
  const short = await startAuthGateway(t, {
    now: shortClock.now,
    wechatUrl: wx.url,
    echoUrl: await startEcho(t),
    redisUrl: redis.url,
    patch: { tokens: { keys: [{ kid: 'k1', secret: 'refresh-test-secret-0123456789abcdef' }], ...tokens } }
  })
  return { short, shortClock }
}

t.test('an expired access token is 20004; refresh gives a working one', async (t) => {
  // 1 s access tokens and no skew, so one can expire within the test.
  const { short, shortClock } = await shortLived(t, { accessTtl: '1s', clockSkew: '0s' })
  const d = await login(short.url, 'exp-1')
  t.equal(d.expiresIn, 1)
  shortClock.advance(2100) // exp has one-second resolution: past iat + 1 s for sure
  const a = await get(short.url + '/api/me', bearer(d.accessToken))
  t.equal(a.status, 401)
  t.equal(a.json?.code, 20004, 'TOKEN_EXPIRED: the client should refresh')
  t.equal(await metric(short.adminUrl, 'wegate_token_rejections_total', { reason: 'expired' }), 1)
  const out = await post(short.url + '/auth/logout', {}, bearer(d.accessToken))
  t.equal(out.json?.code, 20004, 'an expired access token cannot log out (docs/auth.md)')
  const r = await post(short.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(r.status, 200)
  t.equal((await get(short.url + '/api/me', bearer(r.json?.data.accessToken))).status, 200)
})

t.test('a refresh token past its lifetime is 20012 (expired): log in again', async (t) => {
  const { short, shortClock } = await shortLived(t, { refreshTtl: '1s' })
  const d = await login(short.url, 'rexp-1')
  t.ok(d.refreshExpiresIn <= 1, 'refreshExpiresIn follows refreshTtl')
  shortClock.advance(1100) // refresh expiry has millisecond precision
  const r = await post(short.url + '/auth/refresh', { refreshToken: d.refreshToken })
  t.equal(r.status, 401)
  t.equal(r.json?.code, 20012)
  t.equal(await metric(short.adminUrl, 'wegate_refreshes_total', { result: 'expired' }), 1)
})
