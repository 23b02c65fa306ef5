/**
 * The client for WeChat's code2Session (`GET /sns/jscode2session`). It keeps one
 * keep-alive connection pool, bounds every attempt by a timeout, retries only
 * what is transient (errcode -1, a dropped connection, no answer in time), and
 * turns every outcome into a catalog error that carries WeChat's errcode and rid
 * for logs and metrics. The AppSecret, the code and session_key never reach a log
 * line; neither does the request URL, because it contains the secret.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { Pool, type Dispatcher } from 'undici'
import { GatewayError, type ErrorName } from '../errors.js'

export interface WeChatApp {
  appId: string
  secret: string
}

export interface WeChatSession {
  openid: string
  /** Never logged, never sent to a client. */
  sessionKey: string
  unionid?: string
}

export interface WeChatClientOptions {
  /** e.g. `https://api.weixin.qq.com`; a path prefix is kept. */
  baseUrl: string
  /** Per-attempt limit in ms, from sending the request to the end of the body. */
  timeoutMs: number
  /** Extra attempts for transient failures. */
  retries: number
  logger: Logger
  /** Source of jitter in [0, 1); tests pass a fixed one. Default Math.random. */
  random?: () => number
}

export interface WeChatClient {
  /** Exchange a `wx.login` code for the user's openid (and unionid, session_key). Throws WeChatError. */
  code2Session (app: WeChatApp, code: string): Promise<WeChatSession>
  /** The longest one code2Session call can take, ms: every attempt's timeout plus the backoff between them. */
  readonly budgetMs: number
  /** Close the connection pool (waits for calls in flight). */
  close (): Promise<void>
}

/** How a call failed: a WeChat errcode, no answer in time, no connection, or an answer that is not WeChat's. */
export type WeChatFailureKind = 'errcode' | 'timeout' | 'network' | 'bad_response'

/** What operators and metrics need about a failed call. */
export interface WeChatFailure {
  kind: WeChatFailureKind
  /** WeChat's errcode; null when WeChat gave none (timeout, network, bad response). */
  errcode: number | null
  /** WeChat's request id (from errmsg), for WeChat support. */
  rid?: string
  /** Attempts made, retries included. */
  attempts: number
}

/** A code2Session failure: a catalog error for the client plus `wechat` for logs and metrics. */
export class WeChatError extends GatewayError {
  readonly wechat: WeChatFailure

  constructor (name: ErrorName, wechat: WeChatFailure, opts: { detail?: string, cause?: unknown, headers?: Record<string, string> } = {}) {
    super(name, { ...opts, data: null })
    this.name = 'WeChatError'
    this.wechat = wechat
  }
}

type Attempt =
  | { kind: 'ok', session: WeChatSession }
  | { kind: 'errcode', errcode: number, errmsg: string, rid?: string }
  | { kind: 'timeout', cause: unknown }
  | { kind: 'network', cause: unknown, retryable: boolean }
  | { kind: 'bad_response', detail: string }

// A code2Session answer is ~150 bytes; 64 KiB is generous and stops a runaway body.
const MAX_BODY_BYTES = 64 * 1024
// Backoff: 50 ms · 2^n, ± 50 % jitter, at most 1 s — a login is a user waiting.
const BACKOFF_BASE_MS = 50
const BACKOFF_CAP_MS = 1000
const RID = /rid:\s*([0-9A-Za-z-]+)/
// Errors from a pool that is closing or from our own bad arguments: retrying cannot help.
const FATAL_UNDICI = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED', 'UND_ERR_INVALID_ARG'])
const TIMEOUT_UNDICI = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/** Create the code2Session client; one pool for the life of the process (or of a config snapshot). */
export function createWeChatClient (opts: WeChatClientOptions): WeChatClient {
  const url = new URL(opts.baseUrl)
  const path = url.pathname.replace(/\/+$/, '') + '/sns/jscode2session'
  const random = opts.random ?? Math.random
  const log = opts.logger.child({ component: 'wechat' })
  const pool = new Pool(url.origin, {
    connections: 32,
    connect: { timeout: opts.timeoutMs },
    // The per-attempt AbortController below is the real limit; these are a backstop.
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs
  })

  async function attempt (app: WeChatApp, code: string): Promise<Attempt> {
    const query = new URLSearchParams({ appid: app.appId, secret: app.secret, js_code: code, grant_type: 'authorization_code' })
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), opts.timeoutMs)
    let res: Dispatcher.ResponseData
    let text: string | undefined
    try {
      res = await pool.request({ method: 'GET', path: `${path}?${query}`, headers: { accept: 'application/json' }, signal: ac.signal })
      text = await readCapped(res.body)
    } catch (err) {
      if (ac.signal.aborted || TIMEOUT_UNDICI.has(errorCode(err))) return { kind: 'timeout', cause: err }
      return { kind: 'network', cause: err, retryable: !FATAL_UNDICI.has(errorCode(err)) }
    } finally {
      clearTimeout(timer)
    }
    return parseAnswer(res.statusCode, header(res.headers['content-type']), text)
  }

  async function code2Session (app: WeChatApp, code: string): Promise<WeChatSession> {
    let maybeConsumed = false
    for (let n = 1; ; n++) {
      const r = await attempt(app, code)
      if (r.kind === 'ok') {
        log.debug({ appId: app.appId, attempts: n, unionid: r.session.unionid !== undefined }, 'WeChat code2Session ok')
        return r.session
      }
      const transient = r.kind === 'timeout' || (r.kind === 'network' && r.retryable) || (r.kind === 'errcode' && r.errcode === -1)
      if (!transient || n > opts.retries) throw fail(app, r, n, maybeConsumed)
      // A timeout or reset may have reached WeChat and spent the code; a later 40163 then is ours.
      if (r.kind !== 'errcode') maybeConsumed = true
      const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1)) * (0.5 + random())
      log.warn({ appId: app.appId, attempt: n, kind: r.kind, ...failureFields(r), retryInMs: Math.round(delay) }, 'WeChat code2Session failed transiently; retrying')
      await sleep(delay)
    }
  }

  /** Log the final failure once and build the error the caller throws. */
  function fail (app: WeChatApp, r: Exclude<Attempt, { kind: 'ok' }>, attempts: number, maybeConsumed: boolean): WeChatError {
    const appId = app.appId
    if (r.kind === 'timeout') {
      log.warn({ appId, attempts, error: describe(r.cause) }, `WeChat did not answer within ${opts.timeoutMs} ms`)
      return new WeChatError('WECHAT_TIMEOUT', { kind: 'timeout', errcode: null, attempts }, { detail: `no answer within ${opts.timeoutMs} ms after ${attempts} attempt(s)`, cause: r.cause })
    }
    if (r.kind === 'network') {
      log.warn({ appId, attempts, error: describe(r.cause) }, 'WeChat is unreachable')
      return new WeChatError('WECHAT_UNAVAILABLE', { kind: 'network', errcode: null, attempts }, { detail: `connection failed (${errorCode(r.cause) || 'unknown'}) after ${attempts} attempt(s)`, cause: r.cause })
    }
    if (r.kind === 'bad_response') {
      log.error({ appId, attempts, detail: r.detail }, 'WeChat answered with something that is not a code2Session answer')
      return new WeChatError('WECHAT_BAD_RESPONSE', { kind: 'bad_response', errcode: null, attempts }, { detail: r.detail })
    }

    const wechat: WeChatFailure = { kind: 'errcode', errcode: r.errcode, attempts }
    if (r.rid !== undefined) wechat.rid = r.rid
    const fields = { appId, attempts, errcode: r.errcode, rid: r.rid, errmsg: r.errmsg }
    const detail = `WeChat errcode ${r.errcode}: ${r.errmsg}`
    switch (r.errcode) {
      case 40029:
      case 41008:
        log.info(fields, 'WeChat rejected the login code as invalid')
        return new WeChatError('WECHAT_CODE_INVALID', wechat, { detail })
      case 40163:
        log.info(fields, maybeConsumed
          ? 'WeChat says the login code was already used, probably by an earlier attempt that timed out or lost its connection'
          : 'WeChat says the login code was already used')
        return new WeChatError('WECHAT_CODE_USED', wechat, { detail: maybeConsumed ? detail + ' (probably spent by an earlier attempt of this call)' : detail })
      case 40226:
        log.info(fields, 'WeChat refused the login as high-risk')
        return new WeChatError('WECHAT_USER_RISKY', wechat, { detail })
      case 45011:
        log.warn(fields, 'WeChat code2Session minute quota reached')
        // 60 s: WeChat's quota is per minute.
        return new WeChatError('WECHAT_QUOTA', wechat, { detail, headers: { 'Retry-After': '60' } })
      case -1:
        log.warn(fields, 'WeChat is busy (errcode -1) and stayed busy through every retry')
        return new WeChatError('WECHAT_UNAVAILABLE', wechat, { detail: `${detail} after ${attempts} attempt(s)` })
      case 40013:
        log.error(fields, `WeChat rejected the appId ${appId} as invalid: check wechat.apps[].appId in the gateway config (the AppID of the mini program, from mp.weixin.qq.com)`)
        return new WeChatError('WECHAT_MISCONFIGURED', wechat, { detail })
      case 40125:
        log.error(fields, `WeChat rejected the AppSecret of app ${appId}: check wechat.apps[].secret in the gateway config (or the variable it comes from); it may have been reset on mp.weixin.qq.com`)
        return new WeChatError('WECHAT_MISCONFIGURED', wechat, { detail })
      default:
        log.error(fields, 'WeChat answered code2Session with an unexpected errcode')
        return new WeChatError('WECHAT_BAD_RESPONSE', wechat, { detail })
    }
  }

  let budgetMs = opts.timeoutMs * (opts.retries + 1)
  // the jitter factor is at most 1.5
  for (let n = 1; n <= opts.retries; n++) budgetMs += Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1)) * 1.5

  let closing: Promise<void> | undefined
  return {
    code2Session,
    budgetMs: Math.ceil(budgetMs),
    close () {
      closing ??= pool.close()
      return closing
    }
  }
}

/** Turn one HTTP answer into an attempt outcome; never trusts the Content-Type (WeChat sends text/plain). */
function parseAnswer (status: number, contentType: string, text: string | undefined): Attempt {
  if (text === undefined) return { kind: 'bad_response', detail: `HTTP ${status} body larger than ${MAX_BODY_BYTES} bytes` }
  if (status !== 200) {
    // A proxy error page, not WeChat: a short excerpt helps the operator (it cannot hold a session_key).
    return { kind: 'bad_response', detail: `HTTP ${status} (${contentType || 'no content-type'}): ${excerpt(text)}` }
  }
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    return { kind: 'bad_response', detail: `HTTP 200 (${contentType || 'no content-type'}) with a ${text.length}-byte body that is not JSON` }
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { kind: 'bad_response', detail: 'HTTP 200 with JSON that is not an object' }
  }
  const b = body as Record<string, unknown>
  if (typeof b.errcode === 'number' && b.errcode !== 0) {
    const errmsg = typeof b.errmsg === 'string' ? b.errmsg : ''
    const rid = RID.exec(errmsg)?.[1]
    return rid === undefined
      ? { kind: 'errcode', errcode: b.errcode, errmsg }
      : { kind: 'errcode', errcode: b.errcode, errmsg, rid }
  }
  if (typeof b.openid !== 'string' || b.openid === '' || typeof b.session_key !== 'string' || b.session_key === '') {
    // Field names only: the values may include a session_key.
    return { kind: 'bad_response', detail: `HTTP 200 JSON without openid/session_key (fields: ${Object.keys(b).join(', ') || 'none'})` }
  }
  const session: WeChatSession = { openid: b.openid, sessionKey: b.session_key }
  if (typeof b.unionid === 'string' && b.unionid !== '') session.unionid = b.unionid
  return { kind: 'ok', session }
}

async function readCapped (body: Dispatcher.ResponseData['body']): Promise<string | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of body) {
    const buf = chunk as Buffer
    size += buf.length
    // Leaving the loop destroys the stream; the connection is not reused.
    if (size > MAX_BODY_BYTES) return undefined
    chunks.push(buf)
  }
  return Buffer.concat(chunks).toString('utf8')
}

function failureFields (r: Exclude<Attempt, { kind: 'ok' }>): Record<string, unknown> {
  if (r.kind === 'errcode') return { errcode: r.errcode, rid: r.rid }
  if (r.kind === 'bad_response') return { detail: r.detail }
  return { error: describe(r.cause) }
}

/** Code and message of a transport error — not the whole object, which a serializer could expand. */
function describe (err: unknown): { code: string, message: string } {
  return { code: errorCode(err), message: err instanceof Error ? err.message : String(err) }
}

function errorCode (err: unknown): string {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') return err.code
  return ''
}

function header (value: string | string[] | undefined): string {
  return Array.isArray(value) ? (value[0] ?? '') : (value ?? '')
}

function excerpt (text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim()
  if (flat === '') return 'empty body'
  return flat.length > 120 ? flat.slice(0, 120) + '…' : flat
}
