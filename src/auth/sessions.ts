/**
 * The auth sessions service: the one home of session policy, over the store's
 * narrow ports (which only store). A login starts a refresh family; a refresh
 * rotates it, and a spent token presented outside a retry (reuse) revokes the
 * whole family; a family born before the user's logout-all is over; logout ends
 * the caller's token and family, another family only if the caller holds one of
 * its tokens, and with `all` every older session of the user.
 */
import type { TokensConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import type { Metrics } from '../metrics/index.js'
import type { FamilyPort, RefreshRecord, RevocationPort, SessionKeyPort, WebLoginPort } from '../store/index.js'
import type { AccessClaims, TokenService } from './tokens.js'

/** Who a session is for. */
export interface Principal {
  appid: string
  openid: string
  unionid?: string | undefined
}

/** A token pair as the client gets it (login and refresh answer the same shape). */
export interface TokenPair {
  accessToken: string
  tokenType: 'Bearer'
  expiresIn: number
  refreshToken: string
  refreshExpiresIn: number
  openid: string
  unionid?: string
}

/** A pair as issued, before it is answered (a shared login answer is sent again later). */
export interface IssuedPair {
  accessToken: string
  /** The access token's lifetime (s) when issued, at `issuedAt` (ms). */
  expiresIn: number
  issuedAt: number
  refreshToken: string
  refreshExpiresAt: number
  openid: string
  unionid?: string
}

/** The pair to answer at `now`: lifetimes counted from the issue. */
export function pairOf (p: IssuedPair, now: number): TokenPair {
  const pair: TokenPair = {
    accessToken: p.accessToken,
    tokenType: 'Bearer',
    // the full accessTtl in the first answer; what remains of it in a later one
    expiresIn: Math.max(0, p.expiresIn - Math.floor((now - p.issuedAt) / 1000)),
    refreshToken: p.refreshToken,
    refreshExpiresIn: Math.max(0, Math.floor((p.refreshExpiresAt - now) / 1000)),
    openid: p.openid
  }
  if (p.unionid !== undefined) pair.unionid = p.unionid
  return pair
}

/** Where a session event worth an operator's attention is logged (the request's logger). */
export interface SessionLog {
  warn (obj: object, msg: string): void
}

export interface Sessions {
  /** A new login: keep WeChat's secrets (session_key, or a web / App channel's grant), start a family, issue its first pair. */
  start (tokens: TokenService, cfg: TokensConfig, who: Principal, wechat: { sessionKey?: string, grant?: string }): Promise<IssuedPair & { fid: string }>
  /** Rotate a refresh token into a new pair; throws the REFRESH_* / SESSION_APP_UNKNOWN error otherwise. */
  refresh (tokens: TokenService, cfg: TokensConfig, presented: string, appids: readonly string[], log: SessionLog): Promise<IssuedPair & { fid: string }>
  /** Log out the caller's login; `refreshToken` ends another family the caller holds; `all` ends every older one. */
  logout (tokens: TokenService, cfg: TokensConfig, claims: AccessClaims, opts: { refreshToken?: string | undefined, all: boolean }): Promise<void>
}

type SessionStore = SessionKeyPort & FamilyPort & RevocationPort & Pick<WebLoginPort, 'setWeChatGrant'>

/** Create the session policy over the store's ports. */
export function createSessions (deps: { store: SessionStore, metrics: Metrics, now: () => number }): Sessions {
  const policy = new SessionPolicy(deps.store, deps.metrics, deps.now)
  // A plain object, as before: its methods work detached.
  return { start: policy.start.bind(policy), refresh: policy.refresh.bind(policy), logout: policy.logout.bind(policy) }
}

class SessionPolicy implements Sessions {
  constructor (
    private readonly store: SessionStore,
    private readonly metrics: Metrics,
    private readonly now: () => number
  ) {}

  async start (tokens: TokenService, cfg: TokensConfig, who: Principal, wechat: { sessionKey?: string, grant?: string }): Promise<IssuedPair & { fid: string }> {
    const { store } = this
    const t = this.now()
    const refresh = tokens.newRefreshToken()
    const expiresAt = t + Math.min(cfg.refreshTtl, cfg.sessionTtl)
    if (wechat.sessionKey !== undefined) await store.setSessionKey(who.appid, who.openid, wechat.sessionKey, cfg.sessionKeyTtl)
    if (wechat.grant !== undefined) await store.setWeChatGrant(who.appid, who.openid, wechat.grant, cfg.sessionKeyTtl)
    await store.createFamily(refresh.hash, {
      fid: refresh.fid,
      openid: who.openid,
      ...(who.unionid !== undefined ? { unionid: who.unionid } : {}),
      appid: who.appid,
      expiresAt,
      familyExpiresAt: t + cfg.sessionTtl,
      createdAt: t
    })
    return this.issue(tokens, who, refresh.fid, { token: refresh.token, expiresAt })
  }

  async refresh (tokens: TokenService, cfg: TokensConfig, presented: string, appids: readonly string[], log: SessionLog): Promise<IssuedPair & { fid: string }> {
    const fid = tokens.refreshFamily(presented)
    if (fid === null) return this.refused('invalid', 'REFRESH_INVALID')
    const t = this.now()
    const next = tokens.newRefreshToken(fid)
    const result = await this.store.rotateRefresh({
      fid,
      hash: tokens.hashRefresh(presented),
      nextHash: next.hash,
      grace: tokens.sealGrace(presented, next.token),
      nowMs: t,
      refreshTtlMs: cfg.refreshTtl,
      graceMs: cfg.refreshGrace,
      appids
    })
    let record: RefreshRecord
    let child: string | null
    switch (result.status) {
      case 'rotated': record = result.record; child = next.token; break
      // The same child as the first answer: a client that retried gets a working pair.
      case 'grace': record = result.record; child = tokens.openGrace(presented, result.grace); break
      case 'reused':
        // Two parties hold this family's tokens: end it, access tokens included.
        await this.revokeFamily(cfg, fid, t)
        log.warn({ fid }, 'refresh token reused outside a retry: session family revoked')
        return this.refused('reused', 'REFRESH_REUSED')
      case 'foreign':
        this.metrics.refreshes.inc({ result: 'invalid' })
        throw new GatewayError('SESSION_APP_UNKNOWN', { detail: `appid ${result.appid} is not in wechat.apps` })
      case 'expired': return this.refused('expired', 'REFRESH_EXPIRED')
      default: return this.refused('invalid', 'REFRESH_INVALID')
    }
    if (child === null) return this.refused('invalid', 'REFRESH_INVALID')
    // Logout-all ends every family born before its cutoff.
    if (record.createdAt < this.store.userCutoff(record.appid, record.openid)) {
      await this.store.revokeFamily(fid, familyDenyUntil(cfg, t))
      return this.refused('invalid', 'REFRESH_INVALID')
    }
    this.metrics.refreshes.inc({ result: result.status })
    return this.issue(tokens, record, fid, { token: child, expiresAt: record.expiresAt })
  }

  async logout (tokens: TokenService, cfg: TokensConfig, claims: AccessClaims, opts: { refreshToken?: string | undefined, all: boolean }): Promise<void> {
    const { store, metrics } = this
    const t = this.now()
    await store.revokeAccessToken(claims.jti, claims.exp * 1000 + cfg.clockSkew)
    metrics.revocations.inc({ kind: 'token' })
    await this.revokeFamily(cfg, claims.fid, t)
    if (opts.refreshToken !== undefined) await this.endHeldFamily(tokens, cfg, claims, opts.refreshToken, t)
    if (opts.all) {
      await store.revokeUserBefore(claims.appid, claims.openid, t, t + cfg.sessionTtl)
      metrics.revocations.inc({ kind: 'user' })
    }
  }

  /** Logout with another refresh token: end that family too, if the caller really holds it. */
  private async endHeldFamily (tokens: TokenService, cfg: TokensConfig, claims: AccessClaims, refreshToken: string, t: number): Promise<void> {
    const other = tokens.refreshFamily(refreshToken)
    // The family id is no proof (it is in every access token): only a token of the family
    // the caller really holds (live, or spent and not expired) may end it.
    if (other !== null && other !== claims.fid &&
      await this.store.familyToken(other, tokens.hashRefresh(refreshToken), t) !== 'none') {
      await this.revokeFamily(cfg, other, t)
    }
  }

  private async revokeFamily (cfg: TokensConfig, fid: string, t: number): Promise<void> {
    await this.store.revokeFamily(fid, familyDenyUntil(cfg, t))
    this.metrics.revocations.inc({ kind: 'family' })
  }

  private issue (tokens: TokenService, who: Principal, fid: string, refresh: { token: string, expiresAt: number }): IssuedPair & { fid: string } {
    const access = tokens.signAccess({ openid: who.openid, unionid: who.unionid, appid: who.appid, fid })
    const p: IssuedPair & { fid: string } = {
      accessToken: access.token,
      expiresIn: access.expiresIn,
      issuedAt: this.now(),
      refreshToken: refresh.token,
      refreshExpiresAt: refresh.expiresAt,
      openid: who.openid,
      fid
    }
    if (who.unionid !== undefined) p.unionid = who.unionid
    return p
  }

  private refused (result: 'invalid' | 'expired' | 'reused', name: 'REFRESH_INVALID' | 'REFRESH_EXPIRED' | 'REFRESH_REUSED'): never {
    this.metrics.refreshes.inc({ result })
    throw new GatewayError(name)
  }
}

/** No access token of a family outlives its revocation by more than accessTtl + skew. */
function familyDenyUntil (cfg: TokensConfig, t: number): number {
  return t + cfg.accessTtl + cfg.clockSkew
}
