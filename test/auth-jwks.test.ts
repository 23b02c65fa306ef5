/**
 * GET /.well-known/jwks.json: 404 with a shared secret (HS256); with RS256 it
 * publishes the public key, and that key verifies a login's access token with
 * nothing but node:crypto — what an upstream verifying tokens itself would do.
 */
import t from 'tap'
import { createPublicKey, generateKeyPairSync, verify, type JsonWebKey } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { bearer, get, login, startAuthGateway, startEcho, startWeChat } from './helpers/auth.js'

const wx = await startWeChat(t)
const echoUrl = await startEcho(t)

t.test('HS256: no JWKS (404 envelope), the secret is never published', async (t) => {
  const { url } = await startAuthGateway(t, { wechatUrl: wx.url, echoUrl })
  const a = await get(url + '/.well-known/jwks.json')
  t.equal(a.status, 404)
  t.equal(a.json?.code, 30032, 'NO_JWKS: its own code, not 30004 (no route)')
  t.match(a.json?.message, /HS256/)
})

t.test('RS256: the JWKS verifies a login\'s access token with node:crypto', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'wegate-jwks-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const keyFile = join(dir, 'signing.pem')
  writeFileSync(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 })

  const { url } = await startAuthGateway(t, {
    wechatUrl: wx.url,
    echoUrl,
    patch: { tokens: { algorithm: 'RS256', keys: [{ kid: 'rsa-1', privateKeyFile: keyFile }] } }
  })
  const d = await login(url, 'u-jwks-1')
  t.equal((await get(url + '/api/x', bearer(d.accessToken))).status, 200, 'the RS256 token works on a route')

  const a = await get(url + '/.well-known/jwks.json')
  t.equal(a.status, 200)
  t.match(a.headers.get('cache-control'), /max-age=\d+/)
  const jwks = JSON.parse(a.text) as { keys: Array<JsonWebKey & { kid: string, alg: string, use: string }> }
  t.equal(jwks.keys.length, 1)
  const jwk = jwks.keys[0] as JsonWebKey & { kid: string, alg: string, use: string }
  t.equal(jwk.kid, 'rsa-1')
  t.equal(jwk.alg, 'RS256')
  t.equal(jwk.use, 'sig')
  t.equal(jwk.kty, 'RSA')
  t.notOk('d' in jwk || 'p' in jwk || 'q' in jwk, 'no private key material')

  const [h, p, s] = d.accessToken.split('.') as [string, string, string]
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as { alg: string, kid: string }
  t.same({ alg: header.alg, kid: header.kid }, { alg: 'RS256', kid: 'rsa-1' })
  const publicKey = createPublicKey({ key: jwk, format: 'jwk' })
  t.ok(verify('sha256', Buffer.from(`${h}.${p}`), publicKey, Buffer.from(s, 'base64url')), 'signature verifies with the published key')
  const forged = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString('utf8')), openid: 'oOther' })).toString('base64url')
  t.notOk(verify('sha256', Buffer.from(`${h}.${forged}`), publicKey, Buffer.from(s, 'base64url')), 'and fails for altered claims')
  const claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Record<string, unknown>
  t.equal(claims.openid, d.openid)
  t.equal(claims.unionid, d.unionid)
})
