/**
 * wegate-miniprogram's getPhoneNumber and decrypt against a real wegate (the
 * credential hub's /auth/phone and /auth/decrypt), the emulator and Redis: a
 * verified number, a spent phone code, WeChat's official decrypt sample, a
 * stale session_key recovered by one new login, and an expired access token
 * refreshed on the way. Two mini programs are configured, so the client's
 * `appId` option is what picks the app.
 */
import { createHash } from 'node:crypto'
import t from 'tap'
import { APP_A } from './helpers/auth.js'
import { loadClient, startClientStack } from './helpers/client-stack.js'
import { SAMPLE_APP, sampleCode } from './helpers/hub.js'
import { createWx } from './helpers/miniprogram.js'
import { OFFICIAL_SAMPLE } from './helpers/wechat-sample.js'

const { createClient, WegateError } = loadClient()
const stack = await startClientStack(t, { apps: [APP_A, SAMPLE_APP] })

function launch (user: string) {
  const wx = createWx(user)
  const errors: unknown[] = []
  const client = createClient({ baseUrl: stack.url, appId: SAMPLE_APP.appId, wx, onAuthError: (e) => errors.push(e) })
  return { wx, client, errors }
}
const sample = { encryptedData: OFFICIAL_SAMPLE.encryptedData, iv: OFFICIAL_SAMPLE.iv }

t.test('getPhoneNumber: the verified number; a spent code is 10009', async (t) => {
  const { wx, client } = launch('phone')
  const phone = await client.getPhoneNumber('phone-13800138000-a')
  t.match(phone, { purePhoneNumber: '13800138000', countryCode: '86' })
  t.match(phone.phoneNumber, /13800138000$/)
  t.ok(wx.sent.some((s) => s.url.endsWith('/auth/login')), 'logged in first')
  const err = await client.getPhoneNumber('phone-13800138000-a').catch((e: unknown) => e)
  t.ok(err instanceof WegateError)
  t.match(err, { code: 10009, statusCode: 400 })
})

t.test('getPhoneNumber with an access token the gateway says expired: one refresh, then the number', async (t) => {
  const { wx, client } = launch('phoneexpired')
  await client.login()
  stack.advance(16 * 60_000)
  t.match(await client.getPhoneNumber('phone-13900139000-b'), { purePhoneNumber: '13900139000' })
  t.equal(wx.sent.filter((s) => s.url.endsWith('/auth/refresh')).length, 1)
})

t.test("decrypt: WeChat's official sample, with the session_key of the login", async (t) => {
  const { wx, client } = launch('sample')
  wx.queue.push(sampleCode(1))
  t.same(await client.decrypt(sample), OFFICIAL_SAMPLE.decrypted)
  const rawData = JSON.stringify({ nickName: 'Band' })
  const signature = createHash('sha1').update(rawData + OFFICIAL_SAMPLE.sessionKey).digest('hex')
  t.same(await client.decrypt({ ...sample, rawData, signature }), OFFICIAL_SAMPLE.decrypted, 'with a matching rawData signature')
  t.match(await client.decrypt({ ...sample, rawData, signature: '0'.repeat(40) }).catch((e: unknown) => e), { code: 10008 })
})

t.test('decrypt with a fetcher: a stale session_key → one new login, the data fetched again, success', async (t) => {
  const { wx, client, errors } = launch('stale')
  await client.login() // an ordinary code: the gateway's session_key is not the sample's
  wx.queue.push(sampleCode(2)) // the next wx.login hands out the sample's
  let fetched = 0
  const out = await client.decrypt(() => { fetched++; return sample })
  t.same(out, OFFICIAL_SAMPLE.decrypted)
  t.equal(fetched, 2)
  t.equal(wx.codes.length, 2, 'one new wx.login')
  t.same(errors, [])
  const plain = await launch('stale2').client.decrypt(sample).catch((e: unknown) => e)
  t.match(plain, { code: 10005 }, 'plain data: the caller gets 10005 (log in, fetch again)')
})
