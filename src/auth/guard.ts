/**
 * The request guard: Authorization header → verified, unrevoked caller. Runs on
 * every authenticated request, so it is synchronous: signature checks are cached
 * by fast-jwt and the revocation check reads the store's local mirror.
 */
import { GatewayError } from '../errors.js'
import type { Metrics } from '../metrics/index.js'
import type { RevocationPort } from '../store/index.js'
import type { AccessClaims, TokenService } from './tokens.js'

const REJECTION_REASONS: Record<string, string> = {
  TOKEN_MISSING: 'missing',
  TOKEN_MALFORMED: 'malformed',
  TOKEN_BAD_SIGNATURE: 'bad_signature',
  TOKEN_EXPIRED: 'expired',
  TOKEN_NOT_YET_VALID: 'not_yet_valid',
  TOKEN_REVOKED: 'revoked',
  TOKEN_CLAIMS_INVALID: 'claims',
  SESSION_APP_UNKNOWN: 'app'
}

/**
 * The token in `Authorization: Bearer <token>` (scheme case-insensitive). Another scheme
 * (Basic, a bare token) carries no Bearer token: TOKEN_MISSING; `Bearer` with no token or
 * with more than one word: TOKEN_MALFORMED.
 */
export function bearerToken (header: string): string {
  // 'Bearer ' is 7 characters
  if (header.length < 6 || header.slice(0, 6).toLowerCase() !== 'bearer' || (header.length > 6 && header.charCodeAt(6) !== 0x20)) {
    throw new GatewayError('TOKEN_MISSING')
  }
  const token = header.slice(7).trim()
  if (token !== '' && token.indexOf(' ') === -1) return token
  throw new GatewayError('TOKEN_MALFORMED')
}

export interface Guard {
  /**
   * Verify the Authorization header. Returns undefined when no header was sent and
   * `required` is false (anonymous); throws GatewayError (TOKEN_*) otherwise.
   */
  authenticate: (authorization: string | undefined, required: boolean) => AccessClaims | undefined
}

/**
 * The guard of one config snapshot: `apps` are the mini programs it serves (wechat.apps);
 * a token of any other app is refused (SESSION_APP_UNKNOWN), whoever signed it.
 */
export function createGuard (tokens: TokenService, store: Pick<RevocationPort, 'isRevoked'>, metrics: Metrics, apps: ReadonlyMap<string, unknown> | ReadonlySet<string>): Guard {
  const reject = (err: unknown): never => {
    if (err instanceof GatewayError) {
      const reason = REJECTION_REASONS[err.errorName]
      if (reason !== undefined) metrics.tokenRejections.inc({ reason })
    }
    throw err
  }
  return {
    authenticate (authorization, required) {
      if (authorization === undefined) {
        if (required) reject(new GatewayError('TOKEN_MISSING'))
        return undefined
      }
      try {
        const claims = tokens.verifyAccess(bearerToken(authorization))
        if (!apps.has(claims.appid)) throw new GatewayError('SESSION_APP_UNKNOWN', { detail: `appid ${claims.appid} is not in wechat.apps` })
        if (store.isRevoked({ jti: claims.jti, fid: claims.fid, appid: claims.appid, openid: claims.openid, iatMs: claims.iat * 1000 })) {
          throw new GatewayError('TOKEN_REVOKED')
        }
        return claims
      } catch (err) {
        return reject(err)
      }
    }
  }
}
