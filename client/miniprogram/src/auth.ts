/**
 * Login, refresh and re-login, one at a time. Every operation that changes the
 * session runs through one in-flight promise shared by every caller (and every
 * client on the same platform object and storage key): ten requests that find
 * the token expired cause one /auth/refresh, and a login never runs twice at once.
 * Each operation is bounded: one refresh, then at most one login, which asks
 * `wx.login` for a new code at most twice. Nothing loops.
 */
import { Codes, envelopeOf, errorFromAnswer, WegateError } from './errors'
import { httpRequest, loginCode, type Platform, type Response } from './platform'
import { accessDue, isTokenPair, refreshDead, refreshDue, sessionFrom, type Session, type SessionStore, type TokenPair } from './session'
import type { Base } from './url'

/** Why the session went away. */
export type LogoutReason = 'logout' | 'logout-all' | 'ended'

export interface LogoutEvent {
  reason: LogoutReason
  /** For 'ended': the gateway code that ended it (20006 revoked, 20011 refresh reused, …), or 20012 when it ran out locally. */
  code?: number
  openid: string
}

/** What hooks and `session()` see: who is logged in (tokens included, for your own use). */
export type SessionInfo = Session

export interface Events {
  login: (s: SessionInfo) => void
  logout: (e: LogoutEvent) => void
  authError: (e: WegateError) => void
}

export interface AuthContext {
  platform: Platform
  base: Base
  appId: string | undefined
  timeout: number | undefined
  now: () => number
  store: SessionStore
  emit: <K extends keyof Events>(name: K, arg: Parameters<Events[K]>[0]) => void
}

/** In-flight operations, per platform object and storage key. */
const flights = new WeakMap<object, Map<string, Promise<Session>>>()
/** Errors already given to onAuthError (callers sharing one failed operation share its error). */
const reported = new WeakSet<object>()

/** POST a JSON body to one of the gateway's own endpoints. */
export async function post (ctx: AuthContext, path: string, body: unknown, token?: string): Promise<Response> {
  const header: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) header.Authorization = `Bearer ${token}`
  const opts: Record<string, unknown> = { url: ctx.base.text + path, method: 'POST', data: body, header, dataType: 'json' }
  if (ctx.timeout !== undefined) opts.timeout = ctx.timeout
  return await httpRequest(ctx.platform, opts as Parameters<typeof httpRequest>[1])
}

/** The token pair of a successful envelope, or null. */
export function pairOf (res: Response): TokenPair | null {
  const env = envelopeOf(res.data)
  return res.statusCode === 200 && env !== null && env.code === 200 && isTokenPair(env.data) ? env.data : null
}

/** Network failures get one retry: the gateway answers a repeated login code or refresh token with the same result. */
async function postOnce (ctx: AuthContext, path: string, body: unknown): Promise<Response> {
  try {
    return await post(ctx, path, body)
  } catch (err) {
    if (err instanceof WegateError && err.code === Codes.NETWORK) return await post(ctx, path, body)
    throw err
  }
}

export class Auth {
  constructor (private readonly ctx: AuthContext, private readonly key: string) {}

  private flight (): Map<string, Promise<Session>> {
    let m = flights.get(this.ctx.platform)
    if (m === undefined) {
      m = new Map()
      flights.set(this.ctx.platform, m)
    }
    return m
  }

  /** The operation in flight, if any. */
  pending (): Promise<Session> | undefined {
    return this.flight().get(this.key)
  }

  /** Run `op` unless another session operation is in flight (then share that one). */
  private run (op: () => Promise<Session>): Promise<Session> {
    const m = this.flight()
    const current = m.get(this.key)
    if (current !== undefined) return current
    const done = (): void => { m.delete(this.key) }
    const p = op()
    m.set(this.key, p)
    p.then(done, done)
    return p
  }

  /** Give a failure that reaches the app to onAuthError, once per failed operation. */
  async reporting (op: () => Promise<Session>): Promise<Session> {
    try {
      return await op()
    } catch (err) {
      if (err instanceof WegateError && !reported.has(err)) {
        reported.add(err)
        this.ctx.emit('authError', err)
      }
      throw err
    }
  }

  /** A session fit for use: logs in when there is none, renews what the phone's clock says is due. */
  async ensure (): Promise<Session> {
    const inflight = this.pending()
    if (inflight !== undefined) return await inflight
    const s = this.ctx.store.load()
    const t = this.ctx.now()
    if (s === null) return await this.run(() => this.login())
    if (refreshDead(s, t)) return await this.run(() => this.relogin(s, Codes.REFRESH_EXPIRED))
    if (!accessDue(s, t) && !refreshDue(s, t)) return s
    try {
      return await this.run(() => this.refresh(s))
    } catch (err) {
      // Renewing early failed for a passing reason (offline, 5xx) and the session was not ended:
      // the access token still works until it expires.
      if (t < s.accessExpiresAt && this.ctx.store.load()?.accessToken === s.accessToken) return s
      throw err
    }
  }

  /**
   * The gateway refused `used` with `code`: refresh on 20004 (expired), log in
   * again on any other token error. Shares the operation in flight; returns the
   * newer session at once if another caller already renewed.
   */
  async renew (used: string, code: number): Promise<Session> {
    const inflight = this.pending()
    if (inflight !== undefined) return await inflight
    const s = this.ctx.store.load()
    if (s !== null && s.accessToken !== used) return s
    if (s !== null && code === Codes.TOKEN_EXPIRED && !refreshDead(s, this.ctx.now())) return await this.run(() => this.refresh(s))
    return await this.run(() => this.relogin(s, code))
  }

  /** `client.login()`: the stored session when there is a usable one, else a login. `force`: always a new login. */
  async explicitLogin (force: boolean): Promise<Session> {
    if (!force) return await this.ensure()
    const inflight = this.pending()
    if (inflight !== undefined) await inflight.catch(() => undefined)
    return await this.run(() => this.login())
  }

  /** Rotate the pair; if the gateway refuses the refresh token, the session is over: log in again, once. */
  private async refresh (s: Session): Promise<Session> {
    const res = await postOnce(this.ctx, '/auth/refresh', { refreshToken: s.refreshToken })
    const pair = pairOf(res)
    if (pair !== null) return this.keep(pair)
    // 401: 20010 unknown/revoked, 20011 reused, 20012 expired; 400: a corrupt stored token. Anything else is transient.
    if (res.statusCode !== 401 && res.statusCode !== 400) throw errorFromAnswer(res.statusCode, res.data)
    return await this.relogin(s, envelopeOf(res.data)?.code ?? Codes.REFRESH_INVALID)
  }

  /** Refresh without falling back to a login (logout with an expired access token). */
  async refreshOnly (s: Session): Promise<Session | null> {
    const res = await postOnce(this.ctx, '/auth/refresh', { refreshToken: s.refreshToken })
    const pair = pairOf(res)
    return pair === null ? null : this.keep(pair)
  }

  private async relogin (s: Session | null, code: number): Promise<Session> {
    if (s !== null) this.end(s, 'ended', code)
    return await this.login()
  }

  /**
   * wx.login → POST /auth/login. A code WeChat refused as invalid or used
   * (10001 / 10002) is never sent again: one more wx.login gives a new one.
   * Anything else (10003 risky user, 5xx) is the caller's error.
   */
  private async login (): Promise<Session> {
    const first = await this.loginWithNewCode()
    if (!(first instanceof WegateError)) return first
    if (first.code !== Codes.WECHAT_CODE_INVALID && first.code !== Codes.WECHAT_CODE_USED) throw first
    const second = await this.loginWithNewCode()
    if (second instanceof WegateError) throw second
    return second
  }

  /** One wx.login and one POST /auth/login: the session, or the gateway's refusal. */
  private async loginWithNewCode (): Promise<Session | WegateError> {
    const code = await loginCode(this.ctx.platform, this.ctx.timeout)
    const body: Record<string, string> = { code }
    if (this.ctx.appId !== undefined) body.appId = this.ctx.appId
    const res = await postOnce(this.ctx, '/auth/login', body)
    const pair = pairOf(res)
    if (pair === null) return errorFromAnswer(res.statusCode, res.data)
    const s = this.keep(pair)
    this.ctx.emit('login', s)
    return s
  }

  private keep (pair: TokenPair): Session {
    const s = sessionFrom(pair, this.ctx.now())
    this.ctx.store.save(s)
    return s
  }

  /** Forget the session and tell the app why. */
  end (s: Session, reason: LogoutReason, code?: number): void {
    this.ctx.store.clear()
    const e: LogoutEvent = { reason, openid: s.openid }
    if (code !== undefined) e.code = code
    this.ctx.emit('logout', e)
  }
}
