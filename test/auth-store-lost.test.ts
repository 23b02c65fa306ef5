/**
 * A Redis that comes back empty must not un-revoke tokens (issue 11.4): after a restart
 * without persistence, the running gateway and a new one both refuse every access token
 * issued before the loss — the logged-out one included — while new logins work; the
 * running one counts it (wegate_store_state_lost_total) and logs an error.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { createSigner } from 'fast-jwt'
import { bearer, get, login, metric, post, redisFor, startAuthGateway, startEcho, startWeChat, type Answer } from './helpers/auth.js'
import type { StartedGateway } from './helpers/gateway.js'

const SECRET = 'store-lost-secret-0123456789abcdef-012'
const redis = await redisFor(t)
const wx = await startWeChat(t)
const echoUrl = await startEcho(t)
const stack = { wechatUrl: wx.url, echoUrl, redisUrl: redis.url, patch: { tokens: { keys: [{ kid: 'k1', secret: SECRET }] } } }
// A deployment whose store state began a minute ago (its marker, as the first gateway wrote it):
// tokens issued seconds ago are from before the loss this test provokes, and from after that start.
await redis.client().set('wegate:{rv}:epoch', `seeded:${Date.now() - 60_000}`, 'PX', 60_000)
const running = await startAuthGateway(t, stack)

/** An access token of this gateway's keys issued `agoS` seconds ago (iat has one-second resolution). */
function issuedAgo (gw: StartedGateway, agoS: number): string {
  const cfg = gw.gateway.snapshot().config.tokens
  const iat = Math.floor(Date.now() / 1000) - agoS
  const sign = createSigner({ key: SECRET, algorithm: 'HS256', kid: 'k1' })
  const openid = 'o-' + randomBytes(6).toString('hex')
  return sign({
    iss: cfg.issuer,
    aud: cfg.audience,
    sub: openid,
    openid,
    appid: 'wx00000000000demo0',
    fid: randomBytes(16).toString('base64url'),
    jti: randomBytes(16).toString('base64url'),
    iat,
    exp: iat + 900,
    typ: 'access'
  })
}
const api = (gw: StartedGateway, token: string): Promise<Answer> => get(gw.url + '/api/me', bearer(token))

t.test('regression: Redis restarted empty — the running and a new gateway refuse tokens issued before, logged-out ones included', async (t) => {
  const loggedOut = issuedAgo(running, 5)
  const live = issuedAgo(running, 5)
  t.equal((await api(running, live)).status, 200, 'a token issued 5 s ago works before the loss')
  t.equal((await post(running.url + '/auth/logout', {}, bearer(loggedOut))).status, 200)
  t.equal((await api(running, loggedOut)).json?.code, 20006, 'logged out')

  const killedAt = performance.now()
  await redis.restart() // no persistence: revocations, families, everything gone
  const answeredAt = performance.now()
  let last: Answer
  for (;;) {
    last = await api(running, live)
    if (last.json?.code === 20006 || performance.now() - answeredAt > 10_000) break
    await sleep(5)
  }
  t.equal(last.json?.code, 20006, 'the running gateway refuses a token issued before the loss (TOKEN_REVOKED)')
  t.comment(`running gateway: detected ${(performance.now() - answeredAt).toFixed(0)} ms after the restarted redis answered ` +
    `(${(performance.now() - killedAt).toFixed(0)} ms after the kill)`)
  t.equal((await api(running, loggedOut)).json?.code, 20006, 'the logged-out token stays refused')
  t.equal(await metric(running.adminUrl, 'wegate_store_state_lost_total', {}), 1, 'counted')
  t.ok(running.logs.lines.some((l) => l.level === 50 && String(l.msg).includes('lost its state')), 'an error line')

  const fresh = await startAuthGateway(t, stack)
  const loggedOutThere = await api(fresh, loggedOut)
  t.equal(loggedOutThere.status, 401, 'a new gateway refuses the logged-out token Redis forgot')
  t.equal(loggedOutThere.json?.code, 20006)
  t.equal((await api(fresh, live)).json?.code, 20006, 'and every token issued before the loss')
  t.equal(await metric(fresh.adminUrl, 'wegate_store_state_lost_total', {}), 0, 'a new instance cannot tell a loss from a first start: not counted')

  const after = await login(fresh.url, 'after-loss-1')
  t.equal((await api(fresh, after.accessToken)).status, 200, 'a login after the loss works on the new gateway')
  t.equal((await api(running, after.accessToken)).status, 200, 'and on the running one')
})
