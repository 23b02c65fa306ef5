// Token service: sign/verify round trips, every rejection reason, key rotation, asymmetric keys and JWKS.
import t, { type Test } from 'tap'
import { createPublicKey, generateKeyPairSync, createHash } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSigner, createVerifier, type Algorithm } from 'fast-jwt'
import { createTokenService, type TokenService } from '../src/auth/tokens.js'
import type { TokensConfig } from '../src/config/schema.js'
import { ErrorCatalog, GatewayError, type ErrorName } from '../src/errors.js'

const SECRET1 = 'k1-secret-0123456789-0123456789-0123456789'
const SECRET2 = 'k2-secret-0123456789-0123456789-0123456789'
const MIN = 60_000

function config (over: Partial<TokensConfig> = {}): TokensConfig {
  return {
    issuer: 'wegate',
    audience: 'miniprogram',
    algorithm: 'HS256',
    keys: [{ kid: 'k1', secret: SECRET1 }],
    accessTtl: 15 * MIN,
    refreshTtl: 7 * 24 * 60 * MIN,
    sessionTtl: 30 * 24 * 60 * MIN,
    refreshGrace: 10_000,
    sessionKeyTtl: 3 * 24 * 60 * MIN,
    clockSkew: 30_000,
    ...over
  }
}

const who = { openid: 'oUser1', unionid: 'uUnion1', appid: 'wxapp', fid: 'fam1' }

/** Assert verifyAccess throws the catalog error `name` (and no fast-jwt text reaches the message). */
function rejects (t: Test, svc: TokenService, token: unknown, name: ErrorName, msg: string) {
  try {
    svc.verifyAccess(token as string)
    t.fail(`${msg}: accepted`)
  } catch (err) {
    t.ok(err instanceof GatewayError, `${msg}: a GatewayError`)
    const g = err as GatewayError
    t.equal(g.errorName, name, msg)
    t.equal(g.message, ErrorCatalog[name].message, `${msg}: catalog message only`)
  }
}

/** A signer with our claims but any option changed, to forge near-miss tokens. */
function forge (opts: { key: string, algorithm: Algorithm, kid?: string }, payload: Record<string, unknown> = {}): string {
  const now = Math.floor(Date.now() / 1000)
  const sign = createSigner({ ...opts, key: opts.key })
  return sign({ sub: who.openid, openid: who.openid, appid: who.appid, fid: who.fid, jti: 'j-forged', iss: 'wegate', aud: 'miniprogram', typ: 'access', iat: now, exp: now + 900, ...payload })
}

t.test('HS256 round trip carries every claim', async (t) => {
  const svc = await createTokenService(config())
  const s = svc.signAccess(who)
  t.equal(s.expiresIn, 900)
  const c = svc.verifyAccess(s.token)
  t.match(c, { sub: 'oUser1', openid: 'oUser1', unionid: 'uUnion1', appid: 'wxapp', fid: 'fam1', jti: s.jti, iss: 'wegate', aud: 'miniprogram', typ: 'access' })
  t.equal(c.exp - c.iat, 900)
  t.equal(s.expiresAtMs, c.exp * 1000)
  const header = JSON.parse(Buffer.from(s.token.split('.')[0], 'base64url').toString())
  t.same(header, { alg: 'HS256', typ: 'JWT', kid: 'k1' })
  t.not(svc.signAccess(who).jti, s.jti, 'a fresh jti per token')
  const noUnion = svc.verifyAccess(svc.signAccess({ openid: 'o2', appid: 'wxapp', fid: 'f2' }).token)
  t.notOk('unionid' in noUnion, 'unionid only when present')
  t.equal(svc.jwks(), null, 'nothing to publish for HS256')
})

t.test('every rejection reason has its own code', async (t) => {
  let now = Date.now()
  const svc = await createTokenService(config(), { now: () => now })
  const good = svc.signAccess(who).token
  const [h, p, sig] = good.split('.')

  const noneHeader = Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT', kid: 'k1' })).toString('base64url')
  rejects(t, svc, `${noneHeader}.${p}.`, 'TOKEN_BAD_SIGNATURE', 'alg none')
  rejects(t, svc, `${noneHeader}.${p}.${sig}`, 'TOKEN_BAD_SIGNATURE', 'alg none with a signature')
  rejects(t, svc, forge({ key: SECRET2, algorithm: 'HS256', kid: 'k1' }), 'TOKEN_BAD_SIGNATURE', 'signed with another secret')
  const tampered = JSON.parse(Buffer.from(p, 'base64url').toString())
  tampered.openid = tampered.sub = 'oVictim'
  rejects(t, svc, `${h}.${Buffer.from(JSON.stringify(tampered)).toString('base64url')}.${sig}`, 'TOKEN_BAD_SIGNATURE', 'tampered payload')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { iss: 'someone-else' }), 'TOKEN_CLAIMS_INVALID', 'wrong iss')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { aud: 'web' }), 'TOKEN_CLAIMS_INVALID', 'wrong aud')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { typ: 'refresh' }), 'TOKEN_CLAIMS_INVALID', 'typ not access')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { typ: undefined }), 'TOKEN_CLAIMS_INVALID', 'typ missing')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { fid: undefined }), 'TOKEN_CLAIMS_INVALID', 'fid missing')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'zz' }), 'TOKEN_CLAIMS_INVALID', 'unknown kid')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256' }), 'TOKEN_CLAIMS_INVALID', 'no kid')
  rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { nbf: Math.floor(now / 1000) + 120 }), 'TOKEN_NOT_YET_VALID', 'nbf beyond skew')
  t.ok(svc.verifyAccess(forge({ key: SECRET1, algorithm: 'HS256', kid: 'k1' }, { nbf: Math.floor(now / 1000) + 10 })), 'nbf within skew accepted')

  for (const garbage of ['', 'abc', 'a.b.c', '...', 'Bearer x', '%%%.%%%.%%%', 'eyJhbGciOiJIUzI1NiJ9', `${h}.@@@.${sig}`, 'x'.repeat(10_000)]) {
    rejects(t, svc, garbage, 'TOKEN_MALFORMED', `garbage ${JSON.stringify(garbage.slice(0, 20))}`)
  }
  rejects(t, svc, `${Buffer.from('[1]').toString('base64url')}.${p}.${sig}`, 'TOKEN_MALFORMED', 'header not an object')
  rejects(t, svc, undefined, 'TOKEN_MALFORMED', 'not a string')
  rejects(t, svc, svc.newRefreshToken().token, 'TOKEN_MALFORMED', 'a refresh token presented as access')

  now += 15 * MIN + 20_000
  t.equal(svc.verifyAccess(good).openid, 'oUser1', 'expired within the 30 s skew: accepted')
  now += 20_000
  rejects(t, svc, good, 'TOKEN_EXPIRED', 'expired beyond skew')
  now -= 15 * MIN + 40_000 + 60_000
  rejects(t, svc, good, 'TOKEN_NOT_YET_VALID', 'issued in the future beyond skew')
})

t.test('a token verified once is still checked for expiry on every use (the verification cache keeps no verdict on time)', async (t) => {
  let clock = Date.now()
  const svc = await createTokenService(config(), { now: () => clock })
  const s = svc.signAccess(who)
  t.equal(svc.verifyAccess(s.token).openid, 'oUser1', 'verified (and now cached)')
  t.equal(svc.verifyAccess(s.token).openid, 'oUser1', 'from the cache')
  clock = s.expiresAtMs + 30_000 + 1000 // past exp + clockSkew
  rejects(t, svc, s.token, 'TOKEN_EXPIRED', 'a cached token past its exp')
})

t.test('forged tokens are refused every time, also after their real twin was cached', async (t) => {
  const svc = await createTokenService(config())
  const s = svc.signAccess(who)
  svc.verifyAccess(s.token)
  const [h, p, sig] = s.token.split('.')
  const tampered = `${h}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url').toString()), openid: 'oSomeoneElse', sub: 'oSomeoneElse' })).toString('base64url')}.${sig}`
  for (let i = 0; i < 3; i++) rejects(t, svc, tampered, 'TOKEN_BAD_SIGNATURE', `tampered payload, attempt ${i + 1}`)
  t.equal(svc.verifyAccess(s.token).openid, 'oUser1', 'the real token still verifies')
})

t.test('key rotation: old kid still verifies, new kid signs', async (t) => {
  const old = await createTokenService(config({ keys: [{ kid: 'k2', secret: SECRET2 }] }))
  const oldToken = old.signAccess(who).token
  const rotated = await createTokenService(config({ keys: [{ kid: 'k1', secret: SECRET1 }, { kid: 'k2', secret: SECRET2 }] }))
  t.equal(rotated.verifyAccess(oldToken).openid, 'oUser1', 'token signed by k2 still accepted')
  const fresh = rotated.signAccess(who).token
  t.equal(JSON.parse(Buffer.from(fresh.split('.')[0], 'base64url').toString()).kid, 'k1', 'k1 signs new tokens')
  t.equal(rotated.verifyAccess(fresh).fid, 'fam1')
  rejects(t, old, fresh, 'TOKEN_CLAIMS_INVALID', 'an instance that does not know k1 yet')
  // a token claiming kid k2 but signed with k1's secret
  rejects(t, rotated, forge({ key: SECRET1, algorithm: 'HS256', kid: 'k2' }), 'TOKEN_BAD_SIGNATURE', 'kid / key mismatch')
  const retired = await createTokenService(config({ keys: [{ kid: 'k1', secret: SECRET1 }] }))
  rejects(t, retired, oldToken, 'TOKEN_CLAIMS_INVALID', 'after k2 is removed its tokens stop working')
})

t.test('refresh tokens are opaque, carry their family and are stored by hash', async (t) => {
  const svc = await createTokenService(config())
  const a = svc.newRefreshToken()
  t.match(a.token, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/)
  t.equal(a.hash, createHash('sha256').update(a.token).digest('hex'))
  t.equal(svc.hashRefresh(a.token), a.hash)
  t.equal(svc.refreshFamily(a.token), a.fid)
  const b = svc.newRefreshToken(a.fid)
  t.equal(b.fid, a.fid, 'a child keeps the family')
  t.not(b.token, a.token)
  for (const bad of ['', 'x', a.token + 'x', a.token.replace('.', '!'), svc.signAccess(who).token]) {
    t.equal(svc.refreshFamily(bad), null, `not a refresh token: ${bad.slice(0, 12)}`)
  }
})

t.test('grace payload opens only with the token that sealed it', async (t) => {
  const svc = await createTokenService(config())
  const parent = svc.newRefreshToken()
  const child = svc.newRefreshToken(parent.fid)
  const sealed = svc.sealGrace(parent.token, child.token)
  t.notMatch(sealed, child.token.slice(23), 'the child token is not readable in the sealed payload')
  t.equal(svc.openGrace(parent.token, sealed), child.token)
  t.equal(svc.openGrace(svc.newRefreshToken().token, sealed), null, 'another token cannot open it')
  t.equal(svc.openGrace(parent.hash, sealed), null, 'the stored hash cannot open it')
  t.equal(svc.openGrace(parent.token, 'garbage'), null)
})

t.test('a shared login outcome opens only with the code (and app) that sealed it', async (t) => {
  const svc = await createTokenService(config())
  const outcome = JSON.stringify({ ok: { refreshToken: 'secret-refresh-token' } })
  const sealed = svc.sealLogin('wxapp', 'code-1', outcome)
  t.notMatch(sealed, 'secret-refresh-token')
  t.equal(svc.openLogin('wxapp', 'code-1', sealed), outcome)
  t.equal(svc.openLogin('wxapp', 'code-2', sealed), null, 'another code cannot open it')
  t.equal(svc.openLogin('wxother', 'code-1', sealed), null, 'the same code of another app cannot')
  t.equal(svc.openLogin('wxapp', svc.loginKey('wxapp', 'code-1'), sealed), null, 'the store key cannot')
  t.equal(svc.openGrace('wxapp\u0000code-1', sealed), null, 'a grace payload key is another key')
  t.match(svc.loginKey('wxapp', 'code-1'), /^[0-9a-f]{64}$/)
  t.not(svc.loginKey('wxapp', 'code-1'), svc.loginKey('wxap', 'pcode-1'), 'app and code cannot run into each other')
})

t.test('asymmetric algorithms', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-keys-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const pair = async (name: string, type: 'rsa' | 'ec' | 'ed25519') => {
    const kp = type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'ec' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519')
    const priv = join(dir, `${name}.key.pem`)
    const pub = join(dir, `${name}.pub.pem`)
    await writeFile(priv, kp.privateKey.export({ type: 'pkcs8', format: 'pem' }))
    await writeFile(pub, kp.publicKey.export({ type: 'spki', format: 'pem' }))
    return { priv, pub, publicPem: kp.publicKey.export({ type: 'spki', format: 'pem' }).toString() }
  }

  for (const [alg, type] of [['RS256', 'rsa'], ['ES256', 'ec'], ['EdDSA', 'ed25519']] as const) {
    t.test(`${alg} round trip and a usable JWKS`, async (t) => {
      const k1 = await pair(`${alg}-1`, type)
      const k2 = await pair(`${alg}-2`, type)
      const svc = await createTokenService(config({
        algorithm: alg,
        keys: [{ kid: 'a1', privateKeyFile: k1.priv }, { kid: 'a2', publicKeyFile: k2.pub }]
      }))
      const s = svc.signAccess(who)
      t.equal(svc.verifyAccess(s.token).jti, s.jti)
      t.equal(JSON.parse(Buffer.from(s.token.split('.')[0], 'base64url').toString()).alg, alg)
      const old = await createTokenService(config({ algorithm: alg, keys: [{ kid: 'a2', privateKeyFile: k2.priv, publicKeyFile: k2.pub }] }))
      t.equal(svc.verifyAccess(old.signAccess(who).token).openid, 'oUser1', 'second key verifies')

      const jwks = svc.jwks()
      t.ok(jwks)
      if (jwks === null) return
      t.same(jwks.keys.map((k) => [k.kid, k.alg, k.use]), [['a1', alg, 'sig'], ['a2', alg, 'sig']])
      t.notOk(jwks.keys.some((k) => 'd' in k), 'no private parts published')
      // a third party verifies our token with nothing but the JWKS
      const jwk = jwks.keys.find((k) => k.kid === 'a1')!
      const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
      const payload = createVerifier({ key: pem, algorithms: [alg] })(s.token)
      t.equal(payload.openid, 'oUser1', 'JWKS key verifies the token')

      // alg confusion: an HS256 token whose HMAC secret is our public key
      rejects(t, svc, forge({ key: k1.publicPem, algorithm: 'HS256', kid: 'a1' }), 'TOKEN_BAD_SIGNATURE', 'HS256 with the public key as secret')
      rejects(t, svc, forge({ key: SECRET1, algorithm: 'HS256', kid: 'a1' }), 'TOKEN_BAD_SIGNATURE', 'HS256 token on an asymmetric gateway')
    })
  }

  t.test('key problems are reported with their path', async (t) => {
    const rsa = await pair('bad-rsa', 'rsa')
    const ec = await pair('bad-ec', 'ec')
    await t.rejects(createTokenService(config({ algorithm: 'ES256', keys: [{ kid: 'x', privateKeyFile: rsa.priv }] })),
      { name: 'ConfigError', problems: [{ path: 'tokens.keys[0]' }] }, 'RSA key for ES256')
    await t.rejects(createTokenService(config({ algorithm: 'RS256', keys: [{ kid: 'x', publicKeyFile: rsa.pub }] })),
      { name: 'ConfigError', problems: [{ path: 'tokens.keys[0].privateKeyFile' }] }, 'first key cannot sign')
    await t.rejects(createTokenService(config({ algorithm: 'RS256', keys: [{ kid: 'x', privateKeyFile: join(dir, 'missing.pem') }] })),
      { name: 'ConfigError', problems: [{ path: 'tokens.keys[0]' }] }, 'missing file')
    await t.rejects(createTokenService(config({ algorithm: 'ES256', keys: [{ kid: 'x', privateKeyFile: ec.priv, publicKeyFile: (await pair('other-ec', 'ec')).pub }] })),
      { name: 'ConfigError', problems: [{ path: 'tokens.keys[0]', message: /does not match/ }] }, 'mismatched pair')
    // a duplicate kid and an HS256 key without a secret never get here: the loader refuses them (test/config.test.ts)
  })
})
