/**
 * The login coordinator: one outcome per wx.login code (WeChat codes are
 * single-use), shared by every login presenting it — on this instance by one
 * promise, across instances through the store's login claim: the first login
 * claims the code, exchanges it and stores its outcome sealed with the code;
 * the others wait for that outcome and get the same token pair, or the same error.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { FifoMap } from 'toad-cache'
import { GatewayError, type ErrorName } from '../errors.js'
import type { LoginClaimPort, LoginState } from '../store/index.js'
import type { AuthSnapshot } from './snapshot.js'
import type { IssuedPair, Sessions } from './sessions.js'
import { WeChatError, type WeChatApp, type WeChatFailureKind, type WeChatSession } from './wechat.js'

// Same-code logins share one outcome (a client retrying a slow or lost login). 10 s after the
// answer: long enough for a client retrying a lost answer, short enough that a code seen in
// transit is not a reusable credential for long.
const SAME_CODE_WINDOW_MS = 10_000
// A claim outlives the slowest exchange (retries included) by this much: room for the store writes.
const CLAIM_SLACK_MS = 2_000
// Bound on the per-instance sessions kept for a retry after a store failure.
const SAME_CODE_MAX = 10_000
// A login waiting on another instance's claim looks again after 20 ms, doubling up to 200 ms.
const POLL_FIRST_MS = 20
const POLL_MAX_MS = 200

/** A login's answer as the other logins with the same code get it. */
export interface LoginResult extends IssuedPair {
  fid: string
  /** True when this answer was another login's (same code), not this login's own exchange. */
  shared: boolean
}

/** What the store keeps (sealed with the code) for the other logins with the same code. */
type SharedOutcome =
  | { ok: Omit<LoginResult, 'shared'> }
  | { err: { name: ErrorName, kind: WeChatFailureKind, errcode: number | null, headers?: Record<string, string> } }

/** Where the coordinator logs (the request's logger). */
export interface LoginLog {
  warn (obj: object, msg: string): void
}

/** WeChat errors that a second try with the same code cannot change: they are remembered like a success. */
function definitive (err: WeChatError): boolean {
  return err.wechat.kind === 'errcode' && err.wechat.errcode !== -1 && err.wechat.errcode !== 45011
}

export interface LoginCoordinator {
  /** Log in `code` of `wxApp` once, whoever else presents it, here or on another instance. */
  login (snap: AuthSnapshot, wxApp: WeChatApp, code: string, log: LoginLog): Promise<LoginResult>
}

/** Create the coordinator: `login` shares one outcome per code among every login presenting it. */
export function createLoginCoordinator (deps: { claims: LoginClaimPort, sessions: Sessions, now: () => number }): LoginCoordinator {
  const coordinator = new Coordinator(deps.claims, deps.sessions, deps.now)
  // A plain object, as before: `login` works detached.
  return { login: (snap, wxApp, code, log) => coordinator.login(snap, wxApp, code, log) }
}

/** One login of one code: what every step of it needs. */
interface Attempt {
  snap: AuthSnapshot
  wxApp: WeChatApp
  code: string
  /** The store's key for the code (snap.tokens.loginKey). */
  key: string
  log: LoginLog
}

class Coordinator {
  // Logins in flight on this instance, by login key: same-code logins here share one promise.
  private readonly inflight = new Map<string, Promise<LoginResult>>()
  // WeChat sessions this instance obtained whose login then failed on the store (50010): a retry
  // here finishes the login without calling WeChat again (the code is spent there). Kept in
  // memory only, with the claim's owner id so the retry can take the claim back.
  private readonly exchanged = new FifoMap<{ at: number, owner: string, session: WeChatSession }>(SAME_CODE_MAX)

  constructor (
    private readonly claims: LoginClaimPort,
    private readonly sessions: Sessions,
    private readonly now: () => number
  ) {}

  /** Same-code logins on this instance share one promise; the first one claims or waits. */
  async login (snap: AuthSnapshot, wxApp: WeChatApp, code: string, log: LoginLog): Promise<LoginResult> {
    const key = snap.tokens.loginKey(wxApp.appId, code)
    const inflight = this.inflight
    let running = inflight.get(key)
    if (running !== undefined) return { ...await running, shared: true }
    running = this.claimOrWait({ snap, wxApp, code, key, log })
    inflight.set(key, running)
    const mine = running
    mine.then(() => {}, () => {}).finally(() => { if (inflight.get(key) === mine) inflight.delete(key) })
    return await running
  }

  /** Claim the code, or wait for the login that holds the claim and take its outcome. */
  private async claimOrWait (a: Attempt): Promise<LoginResult> {
    const claimTtl = Math.max(SAME_CODE_WINDOW_MS, a.snap.wechat.budgetMs + CLAIM_SLACK_MS)
    const t0 = this.now()
    const owner = this.ownerFor(a.key, t0, claimTtl)
    // The claim expires with a holder that died: past that, waiting cannot help.
    const deadline = t0 + claimTtl + POLL_MAX_MS
    let state: LoginState = await this.claims.claimLogin(a.key, owner, claimTtl)
    let pause = POLL_FIRST_MS
    for (;;) {
      switch (state.status) {
        case 'claimed':
          return await this.exchangeAndIssue(a, owner)
        case 'done':
        case 'failed':
          return openOutcome(a, state.outcome)
        case 'none':
          state = await this.claims.claimLogin(a.key, owner, claimTtl)
          continue
        case 'pending':
          if (this.now() >= deadline) {
            throw new WeChatError('WECHAT_TIMEOUT', { kind: 'timeout', errcode: null, attempts: 0 }, {
              detail: `another login with this code did not finish within ${claimTtl} ms`
            })
          }
          await sleep(pause)
          pause = Math.min(POLL_MAX_MS, pause * 2)
          state = await this.claims.peekLogin(a.key)
      }
    }
  }

  /** The claim's owner id: the one of this instance's earlier exchange of the code (a retry takes its claim back), else a new one. */
  private ownerFor (key: string, t0: number, claimTtl: number): string {
    let known = this.exchanged.get(key)
    if (known !== undefined && t0 - known.at >= claimTtl) {
      this.exchanged.delete(key)
      known = undefined
    }
    return known?.owner ?? randomBytes(12).toString('base64url')
  }

  /** Holder of the claim: exchange the code, start the session, store the outcome for the others. */
  private async exchangeAndIssue (a: Attempt, owner: string): Promise<LoginResult> {
    const known = this.exchanged.get(a.key)
    const session = known?.session ?? await this.exchange(a, owner)
    let result: Omit<LoginResult, 'shared'>
    try {
      result = await this.sessions.start(a.snap.tokens, a.snap.config.tokens,
        { appid: a.wxApp.appId, openid: session.openid, unionid: session.unionid }, session)
    } catch (err) {
      // The claim stays (the store is likely down anyway): a retry here takes it back and
      // uses WeChat's answer kept in memory, since WeChat would now say "code already used".
      if (known === undefined) this.exchanged.set(a.key, { at: this.now(), owner, session })
      throw err
    }
    this.exchanged.delete(a.key)
    await this.share(a, owner, { ok: result }, true)
    return { ...result, shared: false }
  }

  /** WeChat's code2Session; its failure is shared with the others (a definitive one remembered), any other releases the claim. */
  private async exchange (a: Attempt, owner: string): Promise<WeChatSession> {
    try {
      return await a.snap.wechat.exchangeCode(a.wxApp, a.code)
    } catch (err) {
      if (err instanceof WeChatError) {
        const e: SharedOutcome = { err: { name: err.errorName, kind: err.wechat.kind, errcode: err.wechat.errcode } }
        if (err.headers !== undefined) e.err.headers = err.headers
        await this.share(a, owner, e, definitive(err))
      } else {
        await this.claims.releaseLogin(a.key, owner).catch(() => {})
      }
      throw err
    }
  }

  /** Store the outcome, sealed with the code, for the other logins with it; a failure here is logged, never thrown. */
  private async share (a: Attempt, owner: string, outcome: SharedOutcome, remember: boolean): Promise<void> {
    const { snap, wxApp, code, key, log } = a
    try {
      const kept = await this.claims.finishLogin(key, owner, snap.tokens.sealLogin(wxApp.appId, code, JSON.stringify(outcome)), remember, SAME_CODE_WINDOW_MS)
      if (!kept) log.warn({ appid: wxApp.appId }, 'login claim expired before the login finished: a retry with this code may get 10002')
    } catch (err) {
      // This login's answer stands; a retry with the same code on another instance may get 10002.
      log.warn({ appid: wxApp.appId, err: err instanceof GatewayError ? err.detail : String(err) }, 'could not share the login outcome through the store')
    }
  }
}

/** Another login's outcome: the same token pair, or the same error. */
function openOutcome ({ snap, wxApp, code }: Attempt, sealed: string): LoginResult {
  const text = snap.tokens.openLogin(wxApp.appId, code, sealed)
  let outcome: SharedOutcome | undefined
  try { outcome = text === null ? undefined : JSON.parse(text) as SharedOutcome } catch {}
  if (outcome === undefined) throw new GatewayError('INTERNAL', { detail: 'a stored login outcome did not open with its code' })
  if ('ok' in outcome) return { ...outcome.ok, shared: true }
  const e = outcome.err
  throw new WeChatError(e.name, { kind: e.kind, errcode: e.errcode, attempts: 0 }, {
    detail: 'the outcome of another login with the same code',
    ...(e.headers !== undefined ? { headers: e.headers } : {})
  })
}
