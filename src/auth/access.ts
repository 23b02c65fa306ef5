/**
 * Access tokens: signed (fast-jwt, one signer) and verified (one verifier per
 * key, algorithm pinned: the token's own alg is never trusted). exp / nbf / iat
 * are checked against our clock (injectable, one place for the skew). Verified
 * tokens are cached in an LRU keyed by the token itself, successes only.
 */
import { randomBytes } from 'node:crypto'
import { createSigner, createVerifier, TokenError, type Algorithm } from 'fast-jwt'
import { LruMap } from 'toad-cache'
import { GatewayError, type ErrorName } from '../errors.js'
import type { TokensConfig } from '../config/schema.js'
import type { TokenKeys } from './keys.js'

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

// 8 KiB: far above any token we sign (~500 B); longer input is refused before any parsing
const MAX_TOKEN_LENGTH = 8192
// 10 000 verified tokens: skips repeated signature checks for active users (~10 MB at most).
// LRU, not FIFO: during a login storm the new tokens must not push out the users who are active.
const VERIFY_CACHE_SIZE = 10_000

/** fast-jwt error code → our catalog. Anything unknown is treated as a bad signature (fail closed). */
const c = TokenError.codes
const FAST_JWT_CODES = new Map<string, ErrorName>(([
  ['TOKEN_MALFORMED', [c.malformed, c.invalidType, c.invalidPayload]],
  ['TOKEN_BAD_SIGNATURE', [c.invalidSignature, c.invalidAlgorithm, c.missingSignature, c.verifyError, c.invalidKey]],
  ['TOKEN_EXPIRED', [c.expired]],
  ['TOKEN_NOT_YET_VALID', [c.inactive]],
  ['TOKEN_CLAIMS_INVALID', [c.invalidClaimValue, c.invalidClaimType, c.missingRequiredClaim, c.invalidCritHeader]]
] as Array<[ErrorName, string[]]>).flatMap(([name, codes]) => codes.map((code): [string, ErrorName] => [code, name])))

function reject (name: ErrorName, detail: string, cause?: unknown): GatewayError {
  return new GatewayError(name, { detail, cause })
}

type Verify = (token: string) => unknown

export interface AccessTokens {
  sign (claims: { openid: string, unionid?: string | undefined, appid: string, fid: string }): SignedAccess
  verify (token: string): AccessClaims
}

export function createAccessTokens (cfg: TokensConfig, keys: TokenKeys, now: () => number): AccessTokens {
  const alg = cfg.algorithm as Algorithm
  const sign = createSigner({ key: keys.signingKey, algorithm: alg, kid: keys.signingKid })
  const verifiers = new Map<string, Verify>()
  for (const k of keys.verifyKeys) {
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
  // are kept, so forged tokens cannot push real ones out; the least recently used goes first when full.
  // exp / nbf / iat and the claim shapes are checked on every request, cached or not.
  const verified = new LruMap<unknown>(VERIFY_CACHE_SIZE)
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

  return {
    sign (c) {
      const iat = Math.floor(now() / 1000)
      const exp = iat + accessTtlS
      const jti = randomBytes(16).toString('base64url')
      const payload: Record<string, string | number> = {
        iss: cfg.issuer, aud: cfg.audience, sub: c.openid, openid: c.openid, appid: c.appid, fid: c.fid, jti, iat, exp, typ: 'access'
      }
      if (c.unionid !== undefined) payload.unionid = c.unionid
      return { token: sign(payload), jti, expiresIn: accessTtlS, expiresAtMs: exp * 1000 }
    },

    verify (token) {
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
          const code = err instanceof TokenError ? FAST_JWT_CODES.get(err.code) : undefined
          throw reject(code ?? 'TOKEN_BAD_SIGNATURE', `verify failed: ${err instanceof TokenError ? err.code : 'error'}`, err)
        } finally {
          Error.stackTraceLimit = stackLimit
        }
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
    }
  }
}
