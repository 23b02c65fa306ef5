/**
 * The token service, one per config snapshot: access tokens (access.ts), refresh
 * tokens (refresh.ts), sealing (seal.ts) and the keys and JWKS (keys.ts) behind
 * one interface the routes, the sessions service and the guard use.
 *
 * Access token: header {alg, typ: JWT, kid}; claims sub (= openid), openid,
 * unionid?, appid, fid (refresh family), jti, iat, exp, iss, aud, typ: 'access'.
 */
import type { TokensConfig } from '../config/schema.js'
import { createAccessTokens, type AccessClaims, type SignedAccess } from './access.js'
import { loadKeys, type PublicJwk } from './keys.js'
import { hashRefresh, newRefreshToken, refreshFamily } from './refresh.js'
import { loginKey, openGrace, openLogin, sealGrace, sealLogin } from './seal.js'

export type { PublicJwk } from './keys.js'
export type { AccessClaims, SignedAccess } from './access.js'

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

/**
 * Build the token service from config: reads key files, builds one fast-jwt
 * verifier per key and one signer, once. Throws ConfigError listing every key problem.
 */
export async function createTokenService (cfg: TokensConfig, opts: { now?: () => number } = {}): Promise<TokenService> {
  const keys = await loadKeys(cfg)
  const access = createAccessTokens(cfg, keys, opts.now ?? Date.now)
  return {
    signAccess: access.sign,
    verifyAccess: access.verify,
    newRefreshToken,
    hashRefresh,
    refreshFamily,
    sealGrace,
    openGrace,
    loginKey,
    sealLogin,
    openLogin,
    jwks: () => keys.jwks
  }
}
