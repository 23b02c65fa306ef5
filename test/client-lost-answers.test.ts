/**
 * Answers lost on the way back (the server did the work, the phone got a
 * `fail`): wegate-miniprogram resends once, and what the gateway answers then
 * decides the outcome. With a grace window the resent refresh gets the same new
 * pair; with none, it is a reuse, and the client recovers with one login.
 */
import t, { type Test } from 'tap'
import { metric } from './helpers/auth.js'
import { loadClient, startClientStack } from './helpers/client-stack.js'
import { createWx } from './helpers/miniprogram.js'

const { createClient } = loadClient()
const MIN = 60_000

/** Log in, lose the next refresh answer, make the access token due on the phone, call the API. */
async function lostRefresh (t: Test, refreshGrace: string) {
  const stack = await startClientStack(t, { refreshGrace })
  const wx = createWx('lost')
  const phone = { offset: 0 }
  const ended: unknown[] = []
  const client = createClient({ baseUrl: stack.url, wx, now: () => Date.now() + phone.offset, onLogout: (e) => ended.push(e) })
  const first = await client.login()
  wx.lose.push('/auth/refresh')
  phone.offset += 15 * MIN
  const res = await client.request({ url: '/api/after-lost-refresh' })
  t.equal(res.statusCode, 200)
  t.equal(res.data.headers['x-openid'], first.openid)
  t.equal(wx.sent.filter((s) => s.url.endsWith('/auth/refresh')).length, 2, 'the refresh was resent once')
  const refreshes = async (result: string) => await metric(stack.adminUrl, 'wegate_refreshes_total', { result })
  return { logins: wx.sent.filter((s) => s.url.endsWith('/auth/login')).length, ended, refreshes }
}

t.test('a lost refresh answer within the grace window: the same new pair, no login', async (t) => {
  const { logins, ended, refreshes } = await lostRefresh(t, '10s')
  t.equal(await refreshes('rotated'), 1)
  t.equal(await refreshes('grace'), 1, 'the resend got the grace answer')
  t.equal(logins, 1)
  t.same(ended, [])
})

t.test('a lost refresh answer with no grace window: a reuse ends the session, one login', async (t) => {
  const { logins, ended, refreshes } = await lostRefresh(t, '0s')
  t.equal(await refreshes('reused'), 1)
  t.equal(logins, 2)
  t.match(ended, [{ reason: 'ended', code: 20011 }])
})

t.test('renewing early fails (offline): the still-valid token is used; an expired one makes the request fail', async (t) => {
  const stack = await startClientStack(t)
  const wx = createWx('early')
  const phone = { offset: 0 }
  const errors: Array<{ code: number }> = []
  const client = createClient({ baseUrl: stack.url, wx, now: () => Date.now() + phone.offset, onAuthError: (e) => errors.push(e) })
  const s = await client.login()
  phone.offset += s.accessExpiresAt - s.receivedAt - 10_000 // in its last 30 s: due, not expired
  wx.unreachable.push('/auth/refresh', '/auth/refresh') // the refresh and its resend
  const res = await client.request({ url: '/api/early' })
  t.equal(res.statusCode, 200, 'served with the old token')
  t.equal(wx.sent.at(-1)?.header.Authorization, `Bearer ${s.accessToken}`)
  t.same(errors, [], 'nothing for the app to act on')

  phone.offset += 20_000 // now expired on the phone
  wx.unreachable.push('/auth/refresh', '/auth/refresh')
  const err = await client.request({ url: '/api/late' }).catch((e: unknown) => e)
  t.match(err, { code: -1, statusCode: 0, errMsg: /request:fail/ })
  t.equal(errors.length, 1)
  t.equal(client.session()?.refreshToken, s.refreshToken, 'the session is kept for when the network is back')
  t.equal((await client.request({ url: '/api/back' })).statusCode, 200)
})
