/**
 * The store's ports: the shared state behind /auth/login, /auth/refresh,
 * /auth/logout, the revocation check and canary announcements, one narrow
 * interface per concern. Each has a memory implementation (one instance / dev)
 * and a Redis one (many instances); both pass one behavioural suite
 * (test/store.test.ts). `Store` is the composite the app holds; consumers take
 * the port they need. Every operation is atomic; every failure to reach the
 * backing store is a GatewayError('STORE_UNAVAILABLE'), raised fast. Policy
 * (reuse → revoke, logout-all ends older families) is src/auth/sessions.ts's:
 * adapters only store. All times are epoch milliseconds, all durations milliseconds.
 */

/** What a refresh token stands for. Stored under the SHA-256 of the token, never the token. */
export interface RefreshRecord {
  /** Family id: one per login; every token rotated from it shares it (also the access token's `fid`). */
  fid: string
  openid: string
  unionid?: string
  appid: string
  /** This token's own expiry. */
  expiresAt: number
  /** Absolute end of the login (family), whatever the rotations. */
  familyExpiresAt: number
  /** When the family was born (login); compared with logout-all cutoffs. */
  createdAt: number
}

export interface RotateInput {
  /** Family id read from the presented token (it is part of the opaque token). */
  fid: string
  /** SHA-256 of the presented token. */
  hash: string
  /** SHA-256 of the child token to create. */
  nextHash: string
  /**
   * Opaque payload kept with the spent token for `graceMs` only and handed back on
   * a grace hit, so a retried refresh gets the same child (wegate stores the child
   * token sealed with a key derived from the presented token: see tokens.ts).
   */
  grace: string
  nowMs: number
  /** Lifetime of the child (capped by the family's absolute expiry). */
  refreshTtlMs: number
  /** Window after spending in which re-presenting the token is a retry, not a reuse. */
  graceMs: number
  /** The apps this gateway serves (wechat.apps): a family of another app is refused ('foreign') and nothing is spent. */
  appids: readonly string[]
}

export type RotateResult =
  /** The token was live: it is now spent and `record` is the child's. */
  | { status: 'rotated', record: RefreshRecord }
  /** A retry within the grace window: the same child as the first time; `grace` is the payload stored then. */
  | { status: 'grace', record: RefreshRecord, grace: string }
  /**
   * A spent token presented outside a retry: the family's refresh tokens are dead now (atomically,
   * so the live child cannot rotate any more); denying its access tokens is the caller's step.
   */
  | { status: 'reused', fid: string }
  /** The family belongs to an app not in `appids`: refused, the token is not spent. */
  | { status: 'foreign', appid: string }
  /** Token or family past its lifetime. */
  | { status: 'expired' }
  /** Family revoked (logout, logout-all, reuse). */
  | { status: 'revoked' }
  /** Never seen (or long gone). */
  | { status: 'invalid' }

/**
 * A login's claim on a wx.login code (WeChat codes are single-use): the first
 * login with a code claims it and calls code2Session; every other login with the
 * same code, on any instance, gets the outcome the first one stored.
 */
export type LoginClaim =
  /** This caller holds the claim: exchange the code, then finishLogin (or releaseLogin). */
  | { status: 'claimed' }
  /** Another login holds the claim and has not finished: peekLogin until it does. */
  | { status: 'pending' }
  /** The outcome stored by the login that held the claim (opaque: wegate seals it with the code). */
  | { status: 'done', outcome: string }

/** What a login waiting on another one's claim sees. */
export type LoginState =
  | LoginClaim
  /** No claim any more (released, or expired with its holder): claim it yourself. */
  | { status: 'none' }
  /** A failure the holder stored for the logins already waiting; a new login takes the claim over instead. */
  | { status: 'failed', outcome: string }

/** The identity of an access token, as the revocation check needs it. */
export interface RevocationSubject {
  jti: string
  fid: string
  appid: string
  openid: string
  /** The token's iat in ms (iat * 1000). */
  iatMs: number
}

/** WeChat's session_key per user, kept server-side. */
export interface SessionKeyPort {
  /** Overwritten at every login. */
  setSessionKey (appId: string, openid: string, sessionKey: string, ttlMs: number): Promise<void>
  getSessionKey (appId: string, openid: string): Promise<string | null>
}

/** Refresh families: one per login, rotated linearly. */
export interface FamilyPort {
  /** Start a refresh family at login with its first token (stored by hash). */
  createFamily (hash: string, record: RefreshRecord): Promise<void>
  /** Spend a refresh token and mint its child, atomically (see RotateResult). */
  rotateRefresh (input: RotateInput): Promise<RotateResult>
  /**
   * Whether `hash` is a token of the family: its live one ('current', expired or not) or one
   * already spent and not past its own expiry ('spent'). Reads only; 'none' for anything else
   * (unknown, made up, family revoked or over).
   */
  familyToken (fid: string, hash: string, nowMs: number): Promise<'current' | 'spent' | 'none'>
}

/** The deny lists and the synchronous per-request check. */
export interface RevocationPort {
  /**
   * End a login: every refresh token of the family dies, and every access token
   * carrying `fid` is denied until `untilMs` (its latest possible exp + skew).
   */
  revokeFamily (fid: string, untilMs: number): Promise<void>
  /** Deny one access token until `untilMs` (its exp + clock skew). */
  revokeAccessToken (jti: string, untilMs: number): Promise<void>
  /**
   * Logout-all: access tokens of the user with iat before `cutoffMs` are denied.
   * Kept until `untilMs` (cutoff + the absolute session lifetime, so every older family has ended by then).
   */
  revokeUserBefore (appId: string, openid: string, cutoffMs: number, untilMs: number): Promise<void>
  /** The user's latest logout-all cutoff (ms) as this instance knows it, or 0: families born before it are over. */
  userCutoff (appId: string, openid: string): number
  /**
   * The hot-path check, synchronous and local: true when the token is revoked.
   * Throws STORE_UNAVAILABLE only when the local view may be stale (Redis lost)
   * and failMode is `closed`.
   */
  isRevoked (subject: RevocationSubject): boolean
}

/** Same-code logins: one claim per wx.login code, shared by every instance. */
export interface LoginClaimPort {
  /**
   * Claim the login key `key` (a hash of appId + code) for `ttlMs`, unless a claim or a
   * remembered outcome is there. `owner` identifies the claim: the same owner claiming
   * again takes its own claim back (a retry on the instance that already holds WeChat's
   * answer); a stored transient failure is taken over by anyone.
   */
  claimLogin (key: string, owner: string, ttlMs: number): Promise<LoginClaim>
  /** The current state of a login key, for a login waiting on another's claim. */
  peekLogin (key: string): Promise<LoginState>
  /**
   * Replace `owner`'s claim with its outcome, kept `ttlMs`. `remember: false` (a transient
   * failure) hands it to the logins already waiting only. False when the claim was lost (expired).
   */
  finishLogin (key: string, owner: string, outcome: string, remember: boolean, ttlMs: number): Promise<boolean>
  /** Drop `owner`'s claim without an outcome (waiters then claim it themselves). */
  releaseLogin (key: string, owner: string): Promise<void>
}

/** The kinds of single-use entries: a browser login's state, a login ticket. */
export type OnceKind = 'state' | 'ticket'

/**
 * Browser and App logins (src/auth/web-login.ts): single-use entries (a browser
 * login's state, a login ticket, each under a hash of its secret) and WeChat's
 * oauth2 tokens of a user, kept server-side like session_key. Each kind is kept
 * apart: a flood of one (states cost an unauthenticated request) never pushes
 * out the other (a bounded store evicts within a kind).
 */
export interface WebLoginPort {
  /** Keep `value` under (`kind`, `key`) for `ttlMs`, to be taken once. */
  putOnce (kind: OnceKind, key: string, value: string, ttlMs: number): Promise<void>
  /** Read and delete the entry in one step: of concurrent takers at most one gets it. null when absent or expired. */
  takeOnce (kind: OnceKind, key: string): Promise<string | null>
  /** WeChat's access_token / refresh_token of the user in a web or App channel (opaque); overwritten at every login. */
  setWeChatGrant (appId: string, openid: string, grant: string, ttlMs: number): Promise<void>
  getWeChatGrant (appId: string, openid: string): Promise<string | null>
}

/** Canary announcements every instance hears. */
export interface AnnouncementPort {
  /**
   * Tell every instance that a canary was rolled back, or that a config was activated.
   * `key` is opaque to the store (src/proxy/canary.ts defines it: the config hash, its
   * activation epoch, route and upstream); kept until `untilMs`, re-announcing extends it.
   */
  announceRollback (key: string, untilMs: number): Promise<void>
  /** Rollback keys announced by any instance and still in force (local view, like isRevoked). */
  rollbacks (): ReadonlySet<string>
  /** Called for each rollback key announced elsewhere (or on resync) after this call. */
  onRollback (listener: (key: string) => void): void
}

/** A route's rollout record as stored: opaque text (src/proxy/ramp-sync.ts defines it) and its version. */
export interface RolloutRecord {
  /** 1 for the first record of a route, +1 at every write. */
  version: number
  value: string
}

/**
 * Progressive-delivery ramps, one per route, shared by every instance: the
 * record (compare-and-set on its version, so a manual pause never loses to a
 * decision made at the same moment), a decision lease, and each instance's
 * counts for the step being judged.
 */
export interface RolloutPort {
  /** The route's record, or null when none was ever written (or it expired). */
  getRollout (route: string): Promise<RolloutRecord | null>
  /** Write `value` if the stored version is still `expected` (0: no record yet); kept ttlMs. True when written. */
  putRollout (route: string, expected: number, value: string, ttlMs: number): Promise<boolean>
  /** Take or renew the route's decision lease for `holder` (ttlMs); true when `holder` holds it now. */
  leaseRollout (route: string, holder: string, ttlMs: number): Promise<boolean>
  /** `instance`'s counts (opaque) for one analysis window, replacing its earlier report; kept ttlMs. */
  reportRollout (route: string, window: string, instance: string, counts: string, ttlMs: number): Promise<void>
  /** Every instance's latest report for the window. */
  rolloutReports (route: string, window: string): Promise<string[]>
}

/** Reachability, readiness and shutdown. */
export interface HealthPort {
  /** Round trip to the backing store, in ms (0 for memory). */
  ping (): Promise<number>
  /** Reachable and (for Redis) the revocation mirror synchronised. */
  healthy (): boolean
  /** Resolves once the store is usable (Redis: connected and mirror loaded); rejects after timeoutMs. */
  ready (timeoutMs?: number): Promise<void>
  close (): Promise<void>
}

/** The Redis connection (a Cluster on Redis Cluster); none for memory. */
export type RedisConnection = import('ioredis').Redis | import('ioredis').Cluster

/** Every port of one backing store, as the app holds it. */
export interface Store extends SessionKeyPort, FamilyPort, RevocationPort, LoginClaimPort, WebLoginPort, AnnouncementPort, RolloutPort, HealthPort {
  readonly kind: 'memory' | 'redis'
  /**
   * The connection, for features that keep their own keys next to the store's (rate-limit
   * counters): undefined for memory. Nothing of the store's own goes through it.
   */
  redisConnection (): RedisConnection | undefined
}

/** The subset of a pino logger the stores use. */
export interface StoreLogger {
  info (obj: object, msg?: string): void
  warn (obj: object, msg?: string): void
  error (obj: object, msg?: string): void
}

export interface StoreOptions {
  /** Clock, for tests; default Date.now. */
  now?: () => number
  /**
   * Called after every backing-store operation (Redis only) with its name and duration in
   * seconds: wire it to wegate_store_operation_duration_seconds{op}.
   */
  observe?: (op: string, seconds: number, ok: boolean) => void
  /**
   * Called when a running instance finds that Redis lost its state (its epoch marker gone or
   * replaced): wire it to wegate_store_state_lost_total. `since` is the new state's start (ms).
   */
  onStateLost?: (since: number) => void
}
