import { createHash } from 'node:crypto'
import t from 'tap'
import { APP_A, bearer, get, login, metric, post, startEcho } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { hubConfig, SAMPLE_APP, sampleCode, startHubEmulator } from './helpers/hub.js'
import { OFFICIAL_SAMPLE } from './helpers/wechat-sample.js'

const { encryptedData, iv, decrypted, sessionKey } = OFFICIAL_SAMPLE
const echoUrl = await startEcho(t)
const { emu, url: wechatUrl } = await startHubEmulator(t)
const gw = await startGateway(t, hubConfig({ wechatUrl, echoUrl }))
const decrypt = (token: string, body: unknown) => post(gw.url + '/auth/decrypt', body, bearer(token))

t.test('the official sample through POST /auth/decrypt, with the session_key the login stored', async (t) => {
  const pair = await login(gw.url, sampleCode(1), SAMPLE_APP.appId)
  const a = await decrypt(pair.accessToken, { encryptedData, iv })
  t.equal(a.status, 200)
  t.same(a.json, { code: 200, message: 'ok', data: decrypted })
  t.equal(await metric(gw.adminUrl, 'wegate_decrypts_total', { app: SAMPLE_APP.appId, result: 'ok' }), 1)
  t.notOk(gw.logs.text().includes(sessionKey), 'the session_key is never logged')
})

t.test('rawData + signature: checked against the stored session_key', async (t) => {
  const pair = await login(gw.url, sampleCode(2), SAMPLE_APP.appId)
  const rawData = JSON.stringify({ nickName: 'Band', gender: 1, language: 'zh_CN' })
  const signature = createHash('sha1').update(rawData + sessionKey).digest('hex')
  t.equal((await decrypt(pair.accessToken, { encryptedData, iv, rawData, signature })).json?.code, 200)
  const bad = await decrypt(pair.accessToken, { encryptedData, iv, rawData: rawData + ' ', signature })
  t.equal(bad.status, 403)
  t.equal(bad.json?.code, 10008)
  const half = await decrypt(pair.accessToken, { encryptedData, iv, rawData })
  t.equal(half.status, 400)
  t.equal(half.json?.code, 40001)
})

t.test('every error path answers its own envelope, never a 500', async (t) => {
  const pair = await login(gw.url, sampleCode(3), SAMPLE_APP.appId)
  const cases: Array<[string, unknown, number, number]> = [
    ['malformed base64', { encryptedData: 'not base64!', iv }, 400, 40004],
    ['iv of 12 bytes', { encryptedData, iv: 'r7BXXKkLb8qrSNn0' }, 400, 40004],
    ['unaligned data', { encryptedData: Buffer.alloc(20).toString('base64'), iv }, 400, 40004],
    ['missing iv', { encryptedData }, 400, 40001],
    ['iv not a string', { encryptedData, iv: 42 }, 400, 40001]
  ]
  for (const [what, body, status, code] of cases) {
    const a = await decrypt(pair.accessToken, body)
    t.equal(a.status, status, what)
    t.equal(a.json?.code, code, what)
  }
  const anon = await post(gw.url + '/auth/decrypt', { encryptedData, iv })
  t.equal(anon.status, 401, 'no token')
  t.equal(anon.json?.code, 20001)
  const wrongMethod = await get(gw.url + '/auth/decrypt', bearer(pair.accessToken))
  t.equal(wrongMethod.status, 405)
})

t.test('a newer wx.login (a new session_key) makes the old data undecryptable: 10005 says to log in again', async (t) => {
  const first = await login(gw.url, sampleCode('u-gina-1'), SAMPLE_APP.appId)
  t.equal((await decrypt(first.accessToken, { encryptedData, iv })).json?.code, 200)
  // The same user logs in again (wx.login gave a new code, WeChat a new session_key).
  const second = await login(gw.url, 'u-gina-2', SAMPLE_APP.appId)
  t.equal(second.openid, first.openid)
  const stale = await decrypt(first.accessToken, { encryptedData, iv })
  t.equal(stale.status, 400)
  t.equal(stale.json?.code, 10005)
  t.match(stale.json?.message, /wx\.login/)
  t.notMatch(stale.text, /bad decrypt|EVP|ERR_/, 'no library text')
  t.equal(await metric(gw.adminUrl, 'wegate_decrypts_total', { app: SAMPLE_APP.appId, result: 'failed' }), 1)
})

t.test('data whose watermark names another app: 403 10006', async (t) => {
  // An APP_A user whose session_key happens to be the sample's: the data decrypts but belongs to the sample app.
  const a = await login(gw.url, sampleCode(5), APP_A.appId)
  const r = await decrypt(a.accessToken, { encryptedData, iv })
  t.equal(r.status, 403)
  t.equal(r.json?.code, 10006)
  t.equal(await metric(gw.adminUrl, 'wegate_decrypts_total', { app: APP_A.appId, result: 'wrong_app' }), 1)
})

t.test('no session_key stored (it expired): 401 10004, log in again', async (t) => {
  const short = await startGateway(t, { ...hubConfig({ wechatUrl, echoUrl }), tokens: { sessionKeyTtl: '1ms' } })
  const pair = await login(short.url, sampleCode(6), SAMPLE_APP.appId)
  await new Promise((resolve) => setTimeout(resolve, 5))
  const r = await post(short.url + '/auth/decrypt', { encryptedData, iv }, bearer(pair.accessToken))
  t.equal(r.status, 401)
  t.equal(r.json?.code, 10004)
  const calls = emu.checkCalls
  t.same((await get(short.url + '/auth/session', bearer(pair.accessToken))).json?.data, { sessionKeyValid: false }, '/auth/session says so')
  t.equal(emu.checkCalls, calls, 'without asking WeChat')
})

t.test('wechat.decryptMaxAge: recent data passes, older data is refused with 10007', async (t) => {
  // The gateway's clock a minute after the sample's watermark (2016-10-24).
  let clock = 1477314187_000 + 60_000
  const aged = await startGateway(t, hubConfig({ wechatUrl, echoUrl, decryptMaxAge: '2m' }), { now: () => clock })
  const pair = await login(aged.url, sampleCode(7), SAMPLE_APP.appId)
  t.equal((await post(aged.url + '/auth/decrypt', { encryptedData, iv }, bearer(pair.accessToken))).json?.code, 200)
  clock += 2 * 60_000
  const old = await post(aged.url + '/auth/decrypt', { encryptedData, iv }, bearer(pair.accessToken))
  t.equal(old.status, 400)
  t.equal(old.json?.code, 10007)
})
