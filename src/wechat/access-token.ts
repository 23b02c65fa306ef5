/**
 * The central token server (WeChat's "中控服务器"): each app's access_token is
 * obtained with `POST /cgi-bin/stable_token`, cached in the store so every
 * instance uses the same one, and refreshed by one instance at a time (a lock
 * with a lease) — ahead of expiry, or at once when WeChat refuses it. Within an
 * instance a burst of callers shares one fetch (single flight). Forced refreshes
 * (WeChat allows 20 a day, 30 s apart) happen only when the cached token is the
 * one refused and the last forced refresh of the app, on any instance, is at least
 * `minForceIntervalMs` old; otherwise a normal fetch hands out WeChat's current token.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { GatewayError } from '../errors.js'
import { serviceError, TOKEN_ERRCODES } from './api-errors.js'
import { badResponse, type WeChatHttp, type WeChatOutcome, type WeChatRequest } from './http.js'
import type { CachedToken, TokenCachePort } from './token-cache.js'

export interface TokenApp {
  appId: string
  secret: string
}

/** Why a token was fetched: none cached (or expired), ahead of expiry, refused by WeChat, asked for by a backend. */
export type RefreshReason = 'initial' | 'scheduled' | 'forced' | 'backend'

export interface AccessToken {
  accessToken: string
  /** Seconds left, as WeChat counts them. */
  expiresIn: number
}

export interface AccessTokenOptions {
  cache: TokenCachePort
  /** The current WeChat transport (it changes with the config snapshot). */
  http: () => WeChatHttp
  /** The app's credentials from the current config; undefined for an unknown appId. */
  app: (appId: string) => TokenApp | undefined
  logger: Logger
  now?: () => number
  /** Refresh when less than this is left, ms. Default 4 min: WeChat renews in normal mode during a token's last 5. */
  refreshAheadMs?: number
  /** At least this long between two forced refreshes of an app, across instances, ms. Default 30 s (WeChat's own limit). */
  minForceIntervalMs?: number
  /** How often an instance waiting on another's refresh looks at the cache, ms. Default 50. */
  pollMs?: number
  /** Called after every stable_token request: for which app, why, whether force_refresh was sent, and whether it worked. */
  onRefresh?: (appId: string, reason: RefreshReason, forced: boolean, ok: boolean) => void
}

export interface AccessTokenService {
  /** The app's token: cached, or fetched once across instances. Throws UNKNOWN_APP or a WeChat/store error. */
  get (appId: string): Promise<AccessToken>
  /**
   * A fresh token because `stale` was refused by WeChat (reason `forced`) or a backend asked
   * (reason `backend`, `stale` absent): deduplicated across callers and instances.
   */
  refresh (appId: string, reason: 'forced' | 'backend', stale?: string): Promise<AccessToken>
  /** Call a WeChat API with the app's token; when it refuses the token (40001/42001/40014), refresh once and retry once. */
  call (appId: string, request: (accessToken: string) => WeChatRequest): Promise<WeChatOutcome>
  /** Refresh every listed app whose cached token is within refreshAheadMs of expiry (a timer calls it; tests call it). */
  tick (appIds: Iterable<string>): Promise<void>
}

type Done = (c: CachedToken | null) => boolean

// 10 s: should WeChat hand back the same token in the refresh window, reads do not refetch it each time.
const SCHEDULE_GAP_MS = 10_000

/** Create the service; it owns no timer (the caller schedules `tick`). */
export function createAccessTokenService (opts: AccessTokenOptions): AccessTokenService {
  const now = opts.now ?? Date.now
  const aheadMs = opts.refreshAheadMs ?? 4 * 60_000
  const minForceMs = opts.minForceIntervalMs ?? 30_000
  const pollMs = opts.pollMs ?? 50
  const owner = randomUUID()
  const log = opts.logger.child({ component: 'wechat-token' })
  // One fetch per app and mode in flight per instance; every concurrent caller awaits it.
  const inflight = new Map<string, Promise<CachedToken>>()
  // Last background refresh per app on this instance: at most one per SCHEDULE_GAP_MS.
  const lastScheduled = new Map<string, number>()

  const view = (c: CachedToken): AccessToken => ({ accessToken: c.accessToken, expiresIn: Math.max(0, Math.floor((c.expiresAt - now()) / 1000)) })
  const live = (c: CachedToken | null): c is CachedToken => c !== null && c.expiresAt > now()

  function appOf (appId: string): TokenApp {
    const app = opts.app(appId)
    if (app === undefined) throw new GatewayError('UNKNOWN_APP', { detail: `appId ${appId} is not in wechat.apps` })
    return app
  }

  async function fetchToken (app: TokenApp, reason: RefreshReason, force: boolean, previous: CachedToken | null): Promise<CachedToken> {
    const http = opts.http()
    const startedAt = now()
    const r = await http.call({
      api: 'stable_token',
      method: 'POST',
      path: '/cgi-bin/stable_token',
      body: { grant_type: 'client_credential', appid: app.appId, secret: app.secret, force_refresh: force },
      log: { appId: app.appId, reason, force }
    })
    const ok = r.kind === 'ok' && typeof r.body.access_token === 'string' && r.body.access_token !== '' &&
      typeof r.body.expires_in === 'number' && r.body.expires_in > 0
    opts.onRefresh?.(app.appId, reason, force, ok)
    if (r.kind !== 'ok') throw serviceError(log, 'stable_token', r, http.timeoutMs, { appId: app.appId })
    if (!ok) {
      const detail = `HTTP 200 JSON without access_token/expires_in (fields: ${Object.keys(r.body).join(', ') || 'none'})`
      log.error({ appId: app.appId, detail }, 'WeChat answered with something that is not a stable_token answer')
      throw badResponse(detail, r.attempts)
    }
    const token: CachedToken = {
      accessToken: r.body.access_token as string,
      expiresAt: startedAt + (r.body.expires_in as number) * 1000,
      obtainedAt: startedAt,
      forcedAt: force ? startedAt : previous?.forcedAt ?? 0
    }
    // Never the token itself.
    log.info({ appId: app.appId, reason, force, expiresIn: r.body.expires_in, changed: token.accessToken !== previous?.accessToken }, 'access_token obtained')
    return token
  }

  /**
   * Get a token that satisfies `done`, fetching it under the app's lock when no
   * instance has; `force` asks for force_refresh when the interval allows it.
   */
  function obtain (appId: string, reason: RefreshReason, force: boolean, done: Done): Promise<CachedToken> {
    const key = `${appId}\0${force ? 'force' : 'normal'}`
    const running = inflight.get(key)
    if (running !== undefined) return running
    const p = obtainLocked(appOf(appId), reason, force, done).finally(() => inflight.delete(key))
    inflight.set(key, p)
    return p
  }

  async function obtainLocked (app: TokenApp, reason: RefreshReason, force: boolean, done: Done): Promise<CachedToken> {
    // Long enough for one stable_token call with every retry; a crashed holder frees it after this.
    const leaseMs = Math.max(5_000, opts.http().budgetMs + 1_000)
    // Real waiting, bounded by polls (an injected clock may stand still): two leases.
    for (let polls = 0; polls <= Math.ceil((2 * leaseMs) / pollMs); polls++) {
      const seen = await opts.cache.get(app.appId)
      if (done(seen)) return seen!
      if (await opts.cache.tryLock(app.appId, owner, leaseMs)) {
        try {
          const current = await opts.cache.get(app.appId)
          if (done(current)) return current!
          const mayForce = force && (current === null || now() - current.forcedAt >= minForceMs)
          if (force && !mayForce) log.info({ appId: app.appId }, 'access_token refused, but the last forced refresh is too recent: fetching WeChat\'s current token instead')
          const token = await fetchToken(app, reason, mayForce, current)
          await opts.cache.set(app.appId, token, token.expiresAt - now())
          return token
        } finally {
          await opts.cache.unlock(app.appId, owner).catch(() => undefined)
        }
      }
      // Another instance is fetching: its token lands in the cache.
      await sleep(pollMs)
    }
    throw new GatewayError('WECHAT_UNAVAILABLE', { detail: `access_token of ${app.appId}: another instance held the refresh lock for two leases` })
  }

  async function get (appId: string): Promise<AccessToken> {
    appOf(appId)
    const c = await opts.cache.get(appId)
    if (live(c)) {
      if (c.expiresAt - now() <= aheadMs) scheduled(appId)
      return view(c)
    }
    return view(await obtain(appId, 'initial', false, live))
  }

  /** Refresh ahead of expiry in the background; the callers keep the still valid token. */
  function scheduled (appId: string): void {
    if (now() - (lastScheduled.get(appId) ?? Number.NEGATIVE_INFINITY) < SCHEDULE_GAP_MS) return
    lastScheduled.set(appId, now())
    obtain(appId, 'scheduled', false, (c) => live(c) && c.expiresAt - now() > aheadMs)
      .catch((err: unknown) => log.warn({ appId, code: err instanceof GatewayError ? err.code : undefined }, 'scheduled access_token refresh failed; the current token is used until it expires'))
  }

  async function refresh (appId: string, reason: 'forced' | 'backend', stale?: string): Promise<AccessToken> {
    // Refused token: any other live token will do. Backend: one forced refresh per interval serves them all.
    const done: Done = stale !== undefined
      ? (c) => live(c) && c.accessToken !== stale
      : (c) => live(c) && now() - c.forcedAt < minForceMs
    return view(await obtain(appId, reason, true, done))
  }

  async function call (appId: string, request: (accessToken: string) => WeChatRequest): Promise<WeChatOutcome> {
    const first = await get(appId)
    const req = request(first.accessToken)
    const r = await opts.http().call(req)
    if (r.kind !== 'errcode' || !TOKEN_ERRCODES.has(r.errcode)) return r
    log.info({ appId, errcode: r.errcode, api: req.api }, 'WeChat refused the access_token; refreshing once')
    const second = await refresh(appId, 'forced', first.accessToken)
    return await opts.http().call(request(second.accessToken))
  }

  async function tick (appIds: Iterable<string>): Promise<void> {
    for (const appId of appIds) {
      const c = await opts.cache.get(appId).catch(() => null)
      // Only tokens somebody uses: an app never asked for is not fetched.
      if (c !== null && c.expiresAt - now() <= aheadMs) {
        await obtain(appId, 'scheduled', false, (x) => live(x) && x.expiresAt - now() > aheadMs).catch(() => undefined)
      }
    }
  }

  return { get, refresh, call, tick }
}
