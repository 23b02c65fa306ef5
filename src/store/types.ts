/**
 * The Store contract: the shared state behind /auth/login, /auth/refresh,
 * /auth/logout and the revocation check. Two implementations (memory.ts for one
 * instance / dev, redis.ts for many instances) pass one behavioural suite
 * (test/store.test.ts). Every operation is atomic; every failure to reach the
 * backing store is a GatewayError('STORE_UNAVAILABLE'), raised fast.
 * All times are epoch milliseconds, all durations milliseconds.
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
  /** How long a family revoked by reuse detection must stay denied: access TTL + clock skew. */
  denyMs: number
  /** The apps this gateway serves (wechat.apps): a family of another app is refused ('foreign') and nothing is spent. */
  appids: readonly string[]
}

export type RotateResult =
  /** The token was live: it is now spent and `record` is the child's. */
  | { status: 'rotated', record: RefreshRecord }
  /** A retry within the grace window: the same child as the first time; `grace` is the payload stored then. */
  | { status: 'grace', record: RefreshRecord, grace: string }
  /** Spent token presented after the grace window: the whole family has been revoked. */
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

export interface Store {
  readonly kind: 'memory' | 'redis'

  /** Keep WeChat's session_key server-side; overwritten at every login. */
  setSessionKey (appId: string, openid: string, sessionKey: string, ttlMs: number): Promise<void>
  getSessionKey (appId: string, openid: string): Promise<string | null>

  /** Start a refresh family at login with its first token (stored by hash). */
  createFamily (hash: string, record: RefreshRecord): Promise<void>
  /** Spend a refresh token and mint its child, atomically (see RotateResult). */
  rotateRefresh (input: RotateInput): Promise<RotateResult>
  /**
   * End a login: every refresh token of the family dies, and every access token
   * carrying `fid` is denied until `untilMs` (its latest possible exp + skew).
   */
  revokeFamily (fid: string, untilMs: number): Promise<void>

  /** Deny one access token until `untilMs` (its exp + clock skew). */
  revokeAccessToken (jti: string, untilMs: number): Promise<void>
  /**
   * Logout-all: access tokens of the user with iat before `cutoffMs` are denied and
   * refresh families born before it are dead. Kept until `untilMs` (cutoff + the
   * absolute session lifetime, so every older family has ended by then).
   */
  revokeUserBefore (appId: string, openid: string, cutoffMs: number, untilMs: number): Promise<void>
  /**
   * The hot-path check, synchronous and local: true when the token is revoked.
   * Throws STORE_UNAVAILABLE only when the local view may be stale (Redis lost)
   * and failMode is `closed`.
   */
  isRevoked (subject: RevocationSubject): boolean

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

  /** The Redis connection (a Cluster on Redis Cluster), for features that share it (rate-limit counters); absent for memory. */
  readonly redis?: import('ioredis').Redis | import('ioredis').Cluster

  /** Round trip to the backing store, in ms (0 for memory). */
  ping (): Promise<number>
  /** Reachable and (for Redis) the revocation mirror synchronised. */
  healthy (): boolean
  /** Resolves once the store is usable (Redis: connected and mirror loaded); rejects after timeoutMs. */
  ready (timeoutMs?: number): Promise<void>
  close (): Promise<void>
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
