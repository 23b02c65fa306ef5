import { createCipheriv, createHash, createHmac, randomBytes } from 'node:crypto'
import t, { type Test } from 'tap'
import { GatewayError } from '../src/errors.js'
import { decryptOpenData, sameText, sessionSignature } from '../src/wechat/decrypt.js'
import { OFFICIAL_SAMPLE } from './helpers/wechat-sample.js'

const { appId, sessionKey, iv, encryptedData, decrypted } = OFFICIAL_SAMPLE
// 2016-10-24, a little after the sample's watermark (1477314187 s).
const SAMPLE_NOW = 1477314187_000 + 60_000

/** Encrypt `value` the way WeChat does (AES-128-CBC, PKCS#7, base64). */
function encrypt (value: unknown, key: string, ivB64: string): string {
  const c = createCipheriv('aes-128-cbc', Buffer.from(key, 'base64'), Buffer.from(ivB64, 'base64'))
  return Buffer.concat([c.update(JSON.stringify(value)), c.final()]).toString('base64')
}

function refused (t: Test, fn: () => unknown, name: string, status: number): GatewayError {
  let err: unknown
  try { fn() } catch (e) { err = e }
  t.type(err, GatewayError, `${name}: a catalog error`)
  const e = err as GatewayError
  t.equal(e.errorName, name)
  t.equal(e.statusCode, status)
  t.notMatch(e.message, /bad decrypt|Unexpected token|JSON|ERR_/, 'no library text for the client')
  return e
}

t.test("WeChat's official sample decrypts to the documented object", async (t) => {
  t.same(decryptOpenData({ encryptedData, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW }), decrypted)
})

t.test('a max age: recent data passes, data older than it is refused', async (t) => {
  t.same(decryptOpenData({ encryptedData, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW, maxAgeMs: 120_000 }), decrypted)
  refused(t, () => decryptOpenData({ encryptedData, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW, maxAgeMs: 30_000 }), 'DECRYPT_TOO_OLD', 400)
  const noStamp = encrypt({ a: 1, watermark: { appid: appId } }, sessionKey, iv)
  refused(t, () => decryptOpenData({ encryptedData: noStamp, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW, maxAgeMs: 30_000 }), 'DECRYPT_TOO_OLD', 400)
  t.same(decryptOpenData({ encryptedData: noStamp, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW }), { a: 1, watermark: { appid: appId } }, 'no age check when unset')
})

t.test('the watermark must name the caller\'s app', async (t) => {
  refused(t, () => decryptOpenData({ encryptedData, iv }, { appId: 'wx00000000000demo0', sessionKey, nowMs: SAMPLE_NOW }), 'DECRYPT_WRONG_APP', 403)
  const noMark = encrypt({ a: 1 }, sessionKey, iv)
  refused(t, () => decryptOpenData({ encryptedData: noMark, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'DECRYPT_WRONG_APP', 403)
})

t.test('a stale session_key (the client called wx.login again): DECRYPT_FAILED, never a 500', async (t) => {
  const otherKey = randomBytes(16).toString('base64')
  const e = refused(t, () => decryptOpenData({ encryptedData, iv }, { appId, sessionKey: otherKey, nowMs: SAMPLE_NOW }), 'DECRYPT_FAILED', 400)
  t.match(e.message, 'wx.login')
  // Padding that happens to be valid but bytes that are not JSON: same answer.
  const notJson = createCipheriv('aes-128-cbc', Buffer.from(sessionKey, 'base64'), Buffer.from(iv, 'base64'))
  const garbage = Buffer.concat([notJson.update('not json at all'), notJson.final()]).toString('base64')
  refused(t, () => decryptOpenData({ encryptedData: garbage, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'DECRYPT_FAILED', 400)
  const array = encrypt([1, 2], sessionKey, iv)
  refused(t, () => decryptOpenData({ encryptedData: array, iv }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'DECRYPT_FAILED', 400)
})

t.test('malformed base64, an empty or unaligned body, an iv of the wrong length: 400 ENCRYPTED_DATA_MALFORMED', async (t) => {
  const cases: Array<[string, string]> = [
    ['not base64!', iv],
    ['', iv],
    [Buffer.alloc(20).toString('base64'), iv],
    [encryptedData, 'r7BXXKkLb8qrSNn05n0q'],
    [encryptedData, 'r7BXXKkLb8qrSNn05n0qiA==AAAA'],
    [encryptedData, '%%%']
  ]
  for (const [data, v] of cases) {
    refused(t, () => decryptOpenData({ encryptedData: data, iv: v }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'ENCRYPTED_DATA_MALFORMED', 400)
  }
})

t.test('rawData + signature: sha1(rawData + session_key) must match, in constant time', async (t) => {
  const rawData = JSON.stringify({ nickName: 'Band', gender: 1 })
  const signature = createHash('sha1').update(rawData + sessionKey).digest('hex')
  t.same(decryptOpenData({ encryptedData, iv, rawData, signature }, { appId, sessionKey, nowMs: SAMPLE_NOW }), decrypted)
  t.same(decryptOpenData({ encryptedData, iv, rawData, signature: signature.toUpperCase() }, { appId, sessionKey, nowMs: SAMPLE_NOW }), decrypted, 'hex case does not matter')
  refused(t, () => decryptOpenData({ encryptedData, iv, rawData: rawData + ' ', signature }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'SIGNATURE_MISMATCH', 403)
  refused(t, () => decryptOpenData({ encryptedData, iv, rawData, signature: 'abc' }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'SIGNATURE_MISMATCH', 403)
  refused(t, () => decryptOpenData({ encryptedData, iv, rawData }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'VALIDATION_FAILED', 400)
  refused(t, () => decryptOpenData({ encryptedData, iv, signature }, { appId, sessionKey, nowMs: SAMPLE_NOW }), 'VALIDATION_FAILED', 400)
})

t.test('checksession signature is hmac_sha256 of "" keyed with the session_key', async (t) => {
  t.equal(sessionSignature(sessionKey), createHmac('sha256', sessionKey).update('').digest('hex'))
  t.match(sessionSignature(sessionKey), /^[0-9a-f]{64}$/)
})

t.test('sameText', async (t) => {
  t.ok(sameText('abc', 'abc'))
  t.notOk(sameText('abc', 'abd'))
  t.notOk(sameText('abc', 'abcd'), 'different lengths do not throw')
})
