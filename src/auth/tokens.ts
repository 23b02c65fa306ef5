/**
 * The token service: signs and verifies access tokens (JWT, via fast-jwt),
 * mints opaque refresh tokens and their hashes, seals the grace payload and the
 * shared outcome of a login, and
 * publishes the public keys (JWKS) for asymmetric algorithms.
 *
 * Access token: header {alg, typ: JWT, kid}; claims sub (= openid), openid,
 * unionid?, appid, fid (refresh family), jti, iat, exp, iss, aud, typ: 'access'.
 * Refresh token: `<fid>.<secret>` (22 + 43 base64url chars). The family id is
 * part of it so the store can find the family (one Redis hash slot) from the
 * token alone; the secret is 256 random bits; only SHA-256(token) is stored.
 * It has two segments, so it can never parse as a JWT.
 */
import {
  createCipheriv, createDecipheriv, createHash, createPrivateKey, createPublicKey, hkdfSync, randomBytes,
  type JsonWebKey, type KeyObject
} from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createSigner, createVerifier, TokenError, type Algorithm } from 'fast-jwt'
import { GatewayError, type ErrorName } from '../errors.js'
import { ConfigError } from '../config/errors.js'
import type { TokensConfig } from '../config/schema.js'

/** Claims of a verified access token (a shared, frozen-by-contract object: do not mutate). */
export interface AccessClaims {
  sub: string
  openid: string
  unionid?: string
  appid: string
  /** Refresh family (login) this token descends from. */
  fid: string
  jti: string
  /** Seconds since the epoch. */
  iat: number
  exp: number
  nbf?: number
  iss: string
  aud: string
  typ: 'access'
}

export interface SignedAccess {
  token: string
  jti: string
  /** Seconds, for the response's `expiresIn`. */
  expiresIn: number
  /** Expiry in epoch ms (e.g. to keep a revocation entry until then). */
  expiresAtMs: number
}

export interface PublicJwk extends JsonWebKey {
  kid: string
  alg: string
  use: 'sig'
}

export interface TokenService {
  /** Sign an access token for a login (family `fid`). */
  signAccess (claims: { openid: string, unionid?: string, appid: string, fid: string }): SignedAccess
  /** Verify an access token; throws GatewayError (TOKEN_*) naming the exact reason. */
  verifyAccess (token: string): AccessClaims
  /** A new opaque refresh token; a new family id when `fid` is not given (login). */
  newRefreshToken (fid?: string): { token: string, hash: string, fid: string }
  /** SHA-256 (hex) of a refresh token: what the store keys it by. */
  hashRefresh (token: string): string
  /** The family id inside a well-formed refresh token, or null when it is not one. */
  refreshFamily (token: string): string | null
  /** Encrypt `payload` (the child refresh token) so only a holder of `presented` can read it back. */
  sealGrace (presented: string, payload: string): string
  /** Decrypt a sealed grace payload; null when it does not open with this token. */
  openGrace (presented: string, sealed: string): string | null
  /** SHA-256 (hex) of (appId, wx.login code): what the store keys a login's shared outcome by. */
  loginKey (appId: string, code: string): string
  /** Encrypt a login's outcome so only a holder of the same code can read it back (the grace mechanism, another key). */
  sealLogin (appId: string, code: string, payload: string): string
  /** Decrypt a sealed login outcome; null when it does not open with this code. */
  openLogin (appId: string, code: string, sealed: string): string | null
  /** The public keys as a JWKS for RS256/ES256/EdDSA; null for HS256 (nothing to publish). */
  jwks (): { keys: PublicJwk[] } | null
}

const REFRESH_RE = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/
// 8 KiB: far above any token we sign (~500 B); longer input is refused before any parsing
const MAX_TOKEN_LENGTH = 8192
// 10 000 verified tokens per key: skips repeated signature checks for active users (~10 MB at most)
const VERIFY_CACHE_SIZE = 10_000
// HKDF info strings: one key per purpose, even from the same secret
const GRACE_INFO = Buffer.from('wegate refresh grace v1')
const LOGIN_INFO = Buffer.from('wegate login outcome v1')

/** fast-jwt error code → our catalog. Anything unknown is treated as a bad signature (fail closed). */
const FAST_JWT_CODES: Record<string, ErrorName> = {
  [TokenError.codes.malformed]: 'TOKEN_MALFORMED',
  [TokenError.codes.invalidType]: 'TOKEN_MALFORMED',
  [TokenError.codes.invalidPayload]: 'TOKEN_MALFORMED',
  [TokenError.codes.invalidSignature]: 'TOKEN_BAD_SIGNATURE',
  [TokenError.codes.invalidAlgorithm]: 'TOKEN_BAD_SIGNATURE',
  [TokenError.codes.missingSignature]: 'TOKEN_BAD_SIGNATURE',
  [TokenError.codes.verifyError]: 'TOKEN_BAD_SIGNATURE',
  [TokenError.codes.invalidKey]: 'TOKEN_BAD_SIGNATURE',
  [TokenError.codes.expired]: 'TOKEN_EXPIRED',
  [TokenError.codes.inactive]: 'TOKEN_NOT_YET_VALID',
  [TokenError.codes.invalidClaimValue]: 'TOKEN_CLAIMS_INVALID',
  [TokenError.codes.invalidClaimType]: 'TOKEN_CLAIMS_INVALID',
  [TokenError.codes.missingRequiredClaim]: 'TOKEN_CLAIMS_INVALID',
  [TokenError.codes.invalidCritHeader]: 'TOKEN_CLAIMS_INVALID'
}

function reject (name: ErrorName, detail: string, cause?: unknown): GatewayError {
  return new GatewayError(name, { detail, cause })
}

type Verify = (token: string) => unknown

/** The key type node:crypto must report for each algorithm. */
const KEY_TYPES: Record<Exclude<TokensConfig['algorithm'], 'HS256'>, string[]> = {
  RS256: ['rsa'],
  ES256: ['ec'],
  EdDSA: ['ed25519', 'ed448']
}

async function loadAsymmetric (cfg: TokensConfig, problems: Array<{ path: string, message: string }>) {
  const alg = cfg.algorithm as keyof typeof KEY_TYPES
  const out: Array<{ kid: string, publicPem: string, publicKey: KeyObject, privatePem?: string }> = []
  for (const [i, k] of cfg.keys.entries()) {
    const at = `tokens.keys[${i}]`
    if (k.secret !== undefined) problems.push({ path: `${at}.secret`, message: `not used with ${alg}; give privateKeyFile / publicKeyFile` })
    if (i === 0 && k.privateKeyFile === undefined) {
      problems.push({ path: `${at}.privateKeyFile`, message: 'required on the first key: it signs new tokens' })
      continue
    }
    if (k.privateKeyFile === undefined && k.publicKeyFile === undefined) {
      problems.push({ path: at, message: 'needs publicKeyFile (or privateKeyFile)' })
      continue
    }
    try {
      const privatePem = k.privateKeyFile === undefined ? undefined : await readFile(k.privateKeyFile, 'utf8')
      // the public key: from its own file when given, else derived from the private key
      const publicKey: KeyObject = k.publicKeyFile !== undefined
        ? createPublicKey(await readFile(k.publicKeyFile, 'utf8'))
        : createPublicKey(createPrivateKey(privatePem ?? ''))
      const type = publicKey.asymmetricKeyType ?? ''
      if (!KEY_TYPES[alg].includes(type)) {
        problems.push({ path: at, message: `a ${type} key cannot be used with ${alg} (needs ${KEY_TYPES[alg].join(' or ')})` })
        continue
      }
      if (alg === 'ES256' && publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
        problems.push({ path: at, message: 'ES256 needs a P-256 (prime256v1) key' })
        continue
      }
      if (alg === 'RS256' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
        problems.push({ path: at, message: 'RS256 needs an RSA key of at least 2048 bits' })
        continue
      }
      const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
      if (privatePem !== undefined && k.publicKeyFile !== undefined &&
        createPublicKey(createPrivateKey(privatePem)).export({ type: 'spki', format: 'pem' }).toString() !== publicPem) {
        problems.push({ path: at, message: 'publicKeyFile does not match privateKeyFile' })
        continue
      }
      out.push({ kid: k.kid, publicPem, publicKey, ...(i === 0 && privatePem !== undefined ? { privatePem } : {}) })
    } catch (err) {
      problems.push({ path: at, message: `cannot read key: ${err instanceof Error ? err.message : String(err)}` })
    }
  }
  return out
}

/**
 * Build the token service from config: reads key files, builds one fast-jwt
 * verifier per key and one signer, once. Throws ConfigError listing every key problem.
 */
export async function createTokenService (cfg: TokensConfig, opts: { now?: () => number } = {}): Promise<TokenService> {
  const now = opts.now ?? Date.now
  const alg = cfg.algorithm as Algorithm
  // Key problems found reading the key files; the config's own rules (unique kids, a secret
  // on every HS256 key, a private key on the first) were checked by the loader.
  const problems: Array<{ path: string, message: string }> = []

  // per kid: the public key / secret a verifier checks with
  const verifyKeys: Array<{ kid: string, key: string }> = []
  let signingKey: string
  let jwks: { keys: PublicJwk[] } | null = null
  if (cfg.algorithm === 'HS256') {
    for (const k of cfg.keys) if (k.secret !== undefined) verifyKeys.push({ kid: k.kid, key: k.secret })
    signingKey = cfg.keys[0]?.secret ?? ''
  } else {
    const loaded = await loadAsymmetric(cfg, problems)
    for (const k of loaded) verifyKeys.push({ kid: k.kid, key: k.publicPem })
    signingKey = loaded[0]?.privatePem ?? ''
    jwks = {
      keys: loaded.map((k) => ({ ...(k.publicKey.export({ format: 'jwk' })), kid: k.kid, alg: cfg.algorithm, use: 'sig' as const }))
    }
  }
  if (problems.length > 0) throw new ConfigError('tokens', problems)

  const signingKid = cfg.keys[0].kid
  const sign = createSigner({ key: signingKey, algorithm: alg, kid: signingKid })
  // exp / nbf are checked below against our clock (injectable, one place for the skew);
  // fast-jwt checks the algorithm (pinned: the token's own alg is never trusted), signature, iss, aud.
  const verifiers = new Map<string, Verify>()
  for (const k of verifyKeys) {
    verifiers.set(k.kid, createVerifier({
      key: k.key,
      algorithms: [alg],
      allowedIss: cfg.issuer,
      allowedAud: cfg.audience,
      requiredClaims: ['iss', 'aud', 'exp', 'iat', 'jti', 'sub'],
      ignoreExpiration: true,
      ignoreNotBefore: true,
      cache: false // see `verified` below
    }))
  }
  const skew = cfg.clockSkew
  // Tokens whose signature, alg, iss and aud have been verified, keyed by the token itself (an exact
  // match: fast-jwt's own cache would hash ~400 bytes per request to make its key). Only successes
  // are kept, so forged tokens cannot push real ones out; the oldest entry goes first when full.
  // exp / nbf / iat and the claim shapes are checked on every request, cached or not.
  const verified = new Map<string, unknown>()
  const accessTtlS = Math.max(1, Math.floor(cfg.accessTtl / 1000))

  // header segment → verifier: every token one key signs has the same header, so the
  // common case is one Map lookup instead of base64 + JSON.parse (bounded: 64 variants,
  // each remembered only after a token with it verified)
  const headerCache = new Map<string, Verify>()
  /** Read only the header to pick the key: alg must be ours, kid must name a configured key. */
  const pickVerifier = (token: string): Verify => {
    const dot = token.indexOf('.')
    if (dot <= 0) throw reject('TOKEN_MALFORMED', 'not a JWT')
    const segment = token.slice(0, dot)
    const cached = headerCache.get(segment)
    if (cached !== undefined) return cached
    let header: unknown
    try {
      header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    } catch (err) {
      throw reject('TOKEN_MALFORMED', 'header is not base64url JSON', err)
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) throw reject('TOKEN_MALFORMED', 'header is not an object')
    const { alg: tokenAlg, kid } = header as { alg?: unknown, kid?: unknown }
    if (tokenAlg !== alg) throw reject('TOKEN_BAD_SIGNATURE', `alg ${String(tokenAlg)} is not accepted`)
    const verify = typeof kid === 'string' ? verifiers.get(kid) : undefined
    if (verify === undefined) throw reject('TOKEN_CLAIMS_INVALID', 'unknown or missing kid')
    return verify
  }
  /** Remember a header segment once a token carrying it has verified (forged headers never fill the cache). */
  const rememberHeader = (token: string, verify: Verify): void => {
    if (headerCache.size >= 64) return
    const segment = token.slice(0, token.indexOf('.'))
    if (!headerCache.has(segment)) headerCache.set(segment, verify)
  }

  const hashRefresh = (token: string): string => createHash('sha256').update(token).digest('hex')

  return {
    signAccess (c) {
      const iat = Math.floor(now() / 1000)
      const exp = iat + accessTtlS
      const jti = randomBytes(16).toString('base64url')
      const payload: Record<string, string | number> = {
        iss: cfg.issuer, aud: cfg.audience, sub: c.openid, openid: c.openid, appid: c.appid, fid: c.fid, jti, iat, exp, typ: 'access'
      }
      if (c.unionid !== undefined) payload.unionid = c.unionid
      return { token: sign(payload), jti, expiresIn: accessTtlS, expiresAtMs: exp * 1000 }
    },

    verifyAccess (token) {
      if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
        throw reject('TOKEN_MALFORMED', 'empty or oversized token')
      }
      const verify = pickVerifier(token)
      let payload = verified.get(token)
      if (payload === undefined) {
        // fast-jwt's TokenError captures a stack we never show: with forged tokens that is the
        // most expensive part of a 401, so no frames are captured while verifying.
        const stackLimit = Error.stackTraceLimit
        Error.stackTraceLimit = 0
        try {
          payload = verify(token)
        } catch (err) {
          const code = err instanceof TokenError ? FAST_JWT_CODES[err.code] : undefined
          throw reject(code ?? 'TOKEN_BAD_SIGNATURE', `verify failed: ${err instanceof TokenError ? err.code : 'error'}`, err)
        } finally {
          Error.stackTraceLimit = stackLimit
        }
        if (verified.size >= VERIFY_CACHE_SIZE) verified.delete(verified.keys().next().value as string)
        verified.set(token, payload)
        rememberHeader(token, verify)
      }
      const p = payload as Partial<AccessClaims>
      if (p.typ !== 'access') throw reject('TOKEN_CLAIMS_INVALID', 'typ is not access')
      if (typeof p.openid !== 'string' || typeof p.appid !== 'string' || typeof p.fid !== 'string' ||
        typeof p.jti !== 'string' || p.sub !== p.openid || typeof p.exp !== 'number' || typeof p.iat !== 'number' ||
        (p.unionid !== undefined && typeof p.unionid !== 'string')) {
        throw reject('TOKEN_CLAIMS_INVALID', 'missing or mistyped claims')
      }
      const t = now()
      if (t > p.exp * 1000 + skew) throw reject('TOKEN_EXPIRED', 'exp passed')
      if (typeof p.nbf === 'number' && t < p.nbf * 1000 - skew) throw reject('TOKEN_NOT_YET_VALID', 'nbf in the future')
      if (t < p.iat * 1000 - skew) throw reject('TOKEN_NOT_YET_VALID', 'iat in the future')
      return p as AccessClaims
    },

    newRefreshToken (fid) {
      const family = fid ?? randomBytes(16).toString('base64url')
      const token = `${family}.${randomBytes(32).toString('base64url')}`
      return { token, hash: hashRefresh(token), fid: family }
    },

    hashRefresh,

    refreshFamily (token) {
      if (typeof token !== 'string' || !REFRESH_RE.test(token)) return null
      return token.slice(0, 22)
    },

    sealGrace (presented, payload) {
      // The store holds only SHA-256(token), so whoever reads Redis cannot open this during its ≤ graceMs life.
      return seal(presented, GRACE_INFO, payload)
    },

    openGrace (presented, sealed) {
      return open(presented, GRACE_INFO, sealed)
    },

    loginKey (appId, code) {
      return createHash('sha256').update(loginSecret(appId, code)).digest('hex')
    },

    sealLogin (appId, code, payload) {
      // The store keys it by SHA-256(appId, code): reading Redis gives neither the code nor this key.
      return seal(loginSecret(appId, code), LOGIN_INFO, payload)
    },

    openLogin (appId, code, sealed) {
      return open(loginSecret(appId, code), LOGIN_INFO, sealed)
    },

    jwks () {
      return jwks
    }
  }
}

/** \0 cannot occur in an appId: (a, bc) and (ab, c) never collide. */
function loginSecret (appId: string, code: string): string {
  return `${appId}\u0000${code}`
}

/**
 * AES-256-GCM under a key derived (HKDF-SHA-256, `info` per purpose) from a secret
 * the client holds and the store does not: the refresh token for a grace payload,
 * the wx.login code for a shared login outcome. Output: base64url(iv · tag · body).
 */
function seal (secret: string, info: Buffer, payload: string): string {
  const iv = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', sealKey(secret, info), iv)
  const body = Buffer.concat([c.update(payload, 'utf8'), c.final()])
  return Buffer.concat([iv, c.getAuthTag(), body]).toString('base64url')
}

/** The payload `seal` produced from the same secret and info; null when it does not open (wrong secret, tampered). */
function open (secret: string, info: Buffer, sealed: string): string | null {
  try {
    const raw = Buffer.from(sealed, 'base64url')
    if (raw.length < 28) return null
    const d = createDecipheriv('aes-256-gcm', sealKey(secret, info), raw.subarray(0, 12))
    d.setAuthTag(raw.subarray(12, 28))
    return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8')
  } catch {
    return null
  }
}

function sealKey (secret: string, info: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), info, 32))
}
