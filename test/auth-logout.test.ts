/**
 * POST /auth/logout end to end against a real Redis: the access token dies at
 * once, the family with it; `{"all": true}` ends every session of the user.
 */
import t from 'tap'
import { bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'

const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const { url, adminUrl } = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, redisUrl: redis.url })

const api = (token: string) => get(url + '/api/me', bearer(token))
const refresh = (token: string) => post(url + '/auth/refresh', { refreshToken: token })
const logout = (token: string, body: unknown = {}) => post(url + '/auth/logout', body, bearer(token))

t.test('logout revokes the access token at once and ends the login (its refresh token too)', async (t) => {
  const d = await login(url, 'u-lo-1')
  t.equal((await api(d.accessToken)).status, 200)
  const tokenRev = await metric(adminUrl, 'wegate_revocations_total', { kind: 'token' })
  const famRev = await metric(adminUrl, 'wegate_revocations_total', { kind: 'family' })
  const rejected = await metric(adminUrl, 'wegate_token_rejections_total', { reason: 'revoked' })

  const out = await logout(d.accessToken)
  t.equal(out.status, 200)
  t.same(out.json, { code: 200, message: 'ok', data: null })

  const a = await api(d.accessToken)
  t.equal(a.status, 401)
  t.equal(a.json?.code, 20006)
  const r = await refresh(d.refreshToken)
  t.equal(r.status, 401)
  t.equal(r.json?.code, 20010, 'the refresh token of the login is dead')
  const again = await logout(d.accessToken)
  t.equal(again.json?.code, 20006, 'a revoked token cannot log out again')

  t.equal(await metric(adminUrl, 'wegate_revocations_total', { kind: 'token' }) - tokenRev, 1)
  t.equal(await metric(adminUrl, 'wegate_revocations_total', { kind: 'family' }) - famRev, 1)
  t.ok(await metric(adminUrl, 'wegate_token_rejections_total', { reason: 'revoked' }) - rejected >= 2)
})

t.test('logout ends only that login: another session of the same user keeps working', async (t) => {
  const phone = await login(url, 'u-lo2-1')
  const tablet = await login(url, 'u-lo2-2')
  t.equal(phone.openid, tablet.openid)
  await logout(phone.accessToken)
  t.equal((await api(tablet.accessToken)).status, 200)
  t.equal((await refresh(tablet.refreshToken)).status, 200)
})

t.test('logout revokes access tokens rotated from the same login, and a refresh token passed in the body', async (t) => {
  const d = await login(url, 'u-lo3-1')
  const rotated = (await refresh(d.refreshToken)).json?.data
  const other = await login(url, 'u-lo3-2') // a second login whose refresh token the client also hands in
  const out = await logout(rotated.accessToken, { refreshToken: other.refreshToken })
  t.equal(out.status, 200)
  t.equal((await api(d.accessToken)).json?.code, 20006, 'the older access token of the family is revoked')
  t.equal((await refresh(rotated.refreshToken)).json?.code, 20010)
  t.equal((await refresh(other.refreshToken)).json?.code, 20010, 'the refresh token in the body is revoked too')
  t.equal((await api(other.accessToken)).json?.code, 20006, 'and so are the access tokens of its family')
})

t.test('logout with all:true ends every session of the user, and only that user', async (t) => {
  const sessions = [await login(url, 'u-all-1'), await login(url, 'u-all-2'), await login(url, 'u-all-3')]
  const bystander = await login(url, 'u-bystander-1')
  const before = await metric(adminUrl, 'wegate_revocations_total', { kind: 'user' })
  const out = await logout(sessions[0]?.accessToken as string, { all: true })
  t.equal(out.status, 200)
  for (const s of sessions) {
    t.equal((await api(s.accessToken)).json?.code, 20006, 'access token revoked')
    t.equal((await refresh(s.refreshToken)).status, 401, 'refresh token dead')
  }
  t.equal((await api(bystander.accessToken)).status, 200, 'another user is untouched')
  t.equal(await metric(adminUrl, 'wegate_revocations_total', { kind: 'user' }) - before, 1)

  // iat has one-second resolution: a login in the same second as the cutoff is denied (docs/tokens.md).
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const fresh = await login(url, 'u-all-4')
  t.equal((await api(fresh.accessToken)).status, 200, 'the user can log in again afterwards')
})

t.test('logout needs a valid access token; bad bodies are 400', async (t) => {
  const none = await post(url + '/auth/logout', {})
  t.equal(none.status, 401)
  t.equal(none.json?.code, 20001)
  const bad = await post(url + '/auth/logout', {}, { authorization: 'Bearer not.a.jwt' })
  t.equal(bad.status, 401)
  t.ok([20002, 20003].includes(bad.json?.code ?? 0), 'malformed or bad signature')
  const basic = await post(url + '/auth/logout', {}, { authorization: 'Basic Zm9vOmJhcg==' })
  t.equal(basic.json?.code, 20001, 'another scheme carries no Bearer token: TOKEN_MISSING')

  const d = await login(url, 'lo-body-1')
  const typed = await post(url + '/auth/logout', { all: 'yes' }, bearer(d.accessToken))
  t.equal(typed.status, 400)
  t.equal(typed.json?.code, 40001)
  t.equal((await api(d.accessToken)).status, 200, 'a rejected logout revoked nothing')
  const plain = await post(url + '/auth/logout', 'bye', { ...bearer(d.accessToken), 'content-type': 'text/plain' }, true)
  t.equal(plain.status, 415)

  const empty = await post(url + '/auth/logout', '', { ...bearer(d.accessToken), 'content-type': 'application/json' }, true)
  t.equal(empty.status, 400, 'an empty body that claims to be JSON is refused (docs/auth.md: send {})')
  t.equal(empty.json?.code, 40000)

  // No body and no Content-Type at all is a plain logout.
  const res = await fetch(url + '/auth/logout', { method: 'POST', headers: bearer(d.accessToken) })
  t.equal(res.status, 200)
  t.equal((await api(d.accessToken)).json?.code, 20006)
})

t.test('a tampered access token is rejected with bad signature, and counted', async (t) => {
  const d = await login(url, 'tamper-1')
  const [h, p, s] = d.accessToken.split('.') as [string, string, string]
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>
  claims.openid = claims.sub = 'oSomebodyElse000000000000000'
  const forged = `${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${s}`
  const before = await metric(adminUrl, 'wegate_token_rejections_total', { reason: 'bad_signature' })
  const a = await api(forged)
  t.equal(a.status, 401)
  t.equal(a.json?.code, 20003)
  t.equal(await metric(adminUrl, 'wegate_token_rejections_total', { reason: 'bad_signature' }) - before, 1)
})

t.test('regression: logout with a forged refreshToken (another user\'s family id, made-up secret) does not end that user\'s session', async (t) => {
  const victim = await login(url, 'u-victim-1')
  const attacker = await login(url, 'u-attacker-1')
  // The family id is no secret: it is the `fid` claim of every access token of the login.
  const fid = (JSON.parse(Buffer.from(victim.accessToken.split('.')[1] as string, 'base64url').toString('utf8')) as { fid: string }).fid
  t.equal(victim.refreshToken.split('.')[0], fid, 'the refresh token starts with the family id')
  const forged = `${fid}.${'A'.repeat(43)}`
  const out = await logout(attacker.accessToken, { refreshToken: forged })
  t.equal(out.status, 200, 'the attacker\'s own logout succeeds')
  t.equal((await api(victim.accessToken)).status, 200, 'the victim\'s access token still works')
  t.equal((await refresh(victim.refreshToken)).status, 200, 'the victim\'s refresh token still works')
})

t.test('logout with a refresh token of another login of the caller ends that login too (proof of possession)', async (t) => {
  const d = await login(url, 'u-pop-1')
  const other = await login(url, 'u-pop-2')
  const spent = (await refresh(other.refreshToken)).json?.data // rotate once: the body carries the live child
  const out = await logout(d.accessToken, { refreshToken: spent.refreshToken })
  t.equal(out.status, 200)
  t.equal((await refresh(spent.refreshToken)).json?.code, 20010)
  t.equal((await api(spent.accessToken)).json?.code, 20006)
})

t.test('regression: the memory store evicted the oldest revocation when full, so a logged-out token worked again', async (t) => {
  const mem = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl, patch: { store: { type: 'memory', maxEntries: 100 } } })
  const memApi = (token: string) => get(mem.url + '/api/me', bearer(token))
  const sessions = []
  for (let i = 0; i < 120; i++) sessions.push(await login(mem.url, `u-full-${i}`))
  for (const s of sessions) t.equal((await post(mem.url + '/auth/logout', {}, bearer(s.accessToken))).status, 200)
  // 120 jti and 120 family revocations: past maxEntries for both kinds.
  for (const i of [0, 1, 50, 119]) {
    const a = await memApi(sessions[i].accessToken)
    t.equal(a.status, 401, `logout ${i}: still refused`)
    t.equal(a.json?.code, 20006, 'revoked')
  }
  t.equal((await post(mem.url + '/auth/refresh', { refreshToken: sessions[0].refreshToken })).status, 401, 'its refresh token stays dead')
  t.equal((await memApi((await login(mem.url, 'u-full-new')).accessToken)).status, 200, 'a fresh login works')
})
