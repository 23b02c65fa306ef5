/**
 * The transport to WeChat's server API, shared by every call wegate makes
 * (code2Session, stable_token, getuserphonenumber, checksession): one keep-alive
 * pool, a timeout on every attempt, retries of what is transient only (errcode -1,
 * a dropped connection, no answer in time), and WeChat's answer parsed whatever
 * its Content-Type says (it sends text/plain). It never throws: each call ends in
 * an outcome the API's own module maps to catalog errors. Secrets travel in the
 * query or body, so neither the URL nor the body ever reaches a log line.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { Pool, type Dispatcher } from 'undici'
import { GatewayError, type ErrorName } from '../errors.js'

export interface WeChatHttpOptions {
  /** e.g. `https://api.weixin.qq.com`; a path prefix is kept. */
  baseUrl: string
  /** Per-attempt limit in ms, from sending the request to the end of the body. */
  timeoutMs: number
  /** Extra attempts for transient failures. */
  retries: number
  logger: Logger
  /** Source of jitter in [0, 1); tests pass a fixed one. Default Math.random. */
  random?: () => number
  /** Called after every attempt with the API name and its result: the errcode (`0` for success) or the failure kind. */
  observe?: (api: string, result: string) => void
}

export interface WeChatRequest {
  /** The API's name in logs and metrics, e.g. `code2Session`. */
  api: string
  method: 'GET' | 'POST'
  /** Below the base URL, e.g. `/sns/jscode2session`. */
  path: string
  query?: Record<string, string>
  /** Sent as JSON. */
  body?: unknown
  /** Extra fields for the log lines (never a secret, code or token). */
  log?: Record<string, unknown>
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

/** A failed WeChat call: a catalog error for the client plus `wechat` for logs and metrics. */
export class WeChatError extends GatewayError {
  readonly wechat: WeChatFailure

  constructor (name: ErrorName, wechat: WeChatFailure, opts: { detail?: string, cause?: unknown, headers?: Record<string, string> } = {}) {
    super(name, { ...opts, data: null })
    this.name = 'WeChatError'
    this.wechat = wechat
  }
}

type Ended =
  | { kind: 'ok', body: Record<string, unknown> }
  | { kind: 'errcode', errcode: number, errmsg: string, rid?: string }
  | { kind: 'timeout', cause: unknown }
  | { kind: 'network', cause: unknown }
  | { kind: 'bad_response', detail: string }

type Attempt = Exclude<Ended, { kind: 'network' }> | { kind: 'network', cause: unknown, retryable: boolean }

/** How a call ended, after retries. `uncertain`: an earlier attempt may have reached WeChat (timeout or reset). */
export type WeChatOutcome = Ended & { attempts: number, uncertain: boolean }

export type WeChatFailed = Exclude<WeChatOutcome, { kind: 'ok' }>

export interface WeChatHttp {
  /** One API call with retries of transient failures; never throws. */
  call (req: WeChatRequest): Promise<WeChatOutcome>
  /** The longest one call can take, ms: every attempt's timeout plus the backoff between them. */
  readonly budgetMs: number
  readonly timeoutMs: number
  /** Close the connection pool (waits for calls in flight). */
  close (): Promise<void>
}

// WeChat's answers are a few hundred bytes; 64 KiB is generous and stops a runaway body.
const MAX_BODY_BYTES = 64 * 1024
// Backoff: 50 ms · 2^n, ± 50 % jitter, at most 1 s — a user is usually waiting.
const BACKOFF_BASE_MS = 50
const BACKOFF_CAP_MS = 1000
const RID = /rid:\s*([0-9A-Za-z-]+)/
// Errors from a pool that is closing or from our own bad arguments: retrying cannot help.
const FATAL_UNDICI = new Set(['UND_ERR_CLOSED', 'UND_ERR_DESTROYED', 'UND_ERR_INVALID_ARG'])
const TIMEOUT_UNDICI = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/** Create the transport; one pool for the life of the process (or of a config snapshot). */
export function createWeChatHttp (opts: WeChatHttpOptions): WeChatHttp {
  const url = new URL(opts.baseUrl)
  const base = url.pathname.replace(/\/+$/, '')
  const random = opts.random ?? Math.random
  const log = opts.logger
  const pool = new Pool(url.origin, {
    connections: 32,
    connect: { timeout: opts.timeoutMs },
    // The per-attempt AbortController below is the real limit; these are a backstop.
    headersTimeout: opts.timeoutMs,
    bodyTimeout: opts.timeoutMs
  })

  async function attempt (req: WeChatRequest): Promise<Attempt> {
    const query = req.query === undefined ? '' : `?${new URLSearchParams(req.query)}`
    const json = req.body === undefined ? undefined : JSON.stringify(req.body)
    const headers: Record<string, string> = { accept: 'application/json' }
    if (json !== undefined) headers['content-type'] = 'application/json'
    const ac = new AbortController()
    const timer = setTimeout(() => ac.abort(), opts.timeoutMs)
    let res: Dispatcher.ResponseData
    let text: string | undefined
    try {
      res = await pool.request({ method: req.method, path: base + req.path + query, headers, body: json, signal: ac.signal })
      text = await readCapped(res.body)
    } catch (err) {
      if (ac.signal.aborted || TIMEOUT_UNDICI.has(errorCode(err))) return { kind: 'timeout', cause: err }
      return { kind: 'network', cause: err, retryable: !FATAL_UNDICI.has(errorCode(err)) }
    } finally {
      clearTimeout(timer)
    }
    return parseAnswer(res.statusCode, header(res.headers['content-type']), text)
  }

  async function call (req: WeChatRequest): Promise<WeChatOutcome> {
    let uncertain = false
    for (let n = 1; ; n++) {
      const r = await attempt(req)
      opts.observe?.(req.api, r.kind === 'ok' ? '0' : r.kind === 'errcode' ? String(r.errcode) : r.kind)
      const transient = r.kind === 'timeout' || (r.kind === 'network' && r.retryable) || (r.kind === 'errcode' && r.errcode === -1)
      if (!transient || n > opts.retries) {
        if (r.kind === 'network') return { kind: 'network', cause: r.cause, attempts: n, uncertain }
        return { ...r, attempts: n, uncertain }
      }
      // A timeout or reset may have reached WeChat (and spent a single-use code).
      if (r.kind !== 'errcode') uncertain = true
      const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1)) * (0.5 + random())
      log.warn({ ...req.log, api: req.api, attempt: n, kind: r.kind, ...failureFields(r), retryInMs: Math.round(delay) }, `WeChat ${req.api} failed transiently; retrying`)
      await sleep(delay)
    }
  }

  let budgetMs = opts.timeoutMs * (opts.retries + 1)
  // the jitter factor is at most 1.5
  for (let n = 1; n <= opts.retries; n++) budgetMs += Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (n - 1)) * 1.5

  let closing: Promise<void> | undefined
  return {
    call,
    budgetMs: Math.ceil(budgetMs),
    timeoutMs: opts.timeoutMs,
    close () {
      closing ??= pool.close()
      return closing
    }
  }
}

/**
 * The error for a call that ended without an errcode (timeout, no connection, not
 * WeChat's answer), logged once; errcode outcomes are the API module's to map.
 */
export function transportError (log: Logger, r: Exclude<WeChatFailed, { kind: 'errcode' }>, api: string, timeoutMs: number, fields: Record<string, unknown> = {}): WeChatError {
  const attempts = r.attempts
  if (r.kind === 'timeout') {
    log.warn({ ...fields, api, attempts, error: describe(r.cause) }, `WeChat did not answer within ${timeoutMs} ms`)
    return new WeChatError('WECHAT_TIMEOUT', { kind: 'timeout', errcode: null, attempts }, { detail: `no answer within ${timeoutMs} ms after ${attempts} attempt(s)`, cause: r.cause })
  }
  if (r.kind === 'network') {
    log.warn({ ...fields, api, attempts, error: describe(r.cause) }, 'WeChat is unreachable')
    return new WeChatError('WECHAT_UNAVAILABLE', { kind: 'network', errcode: null, attempts }, { detail: `connection failed (${errorCode(r.cause) || 'unknown'}) after ${attempts} attempt(s)`, cause: r.cause })
  }
  log.error({ ...fields, api, attempts, detail: r.detail }, `WeChat answered with something that is not a ${api} answer`)
  return badResponse(r.detail, attempts)
}

/** WECHAT_BAD_RESPONSE for an answer that parsed but lacks what the API promises. */
export function badResponse (detail: string, attempts: number): WeChatError {
  return new WeChatError('WECHAT_BAD_RESPONSE', { kind: 'bad_response', errcode: null, attempts }, { detail })
}

/** The `wechat` part of an errcode outcome's error. */
export function errcodeFailure (r: Extract<WeChatOutcome, { kind: 'errcode' }>): WeChatFailure {
  const wechat: WeChatFailure = { kind: 'errcode', errcode: r.errcode, attempts: r.attempts }
  if (r.rid !== undefined) wechat.rid = r.rid
  return wechat
}

/** Turn one HTTP answer into an attempt outcome; never trusts the Content-Type (WeChat sends text/plain). */
function parseAnswer (status: number, contentType: string, text: string | undefined): Attempt {
  if (text === undefined) return { kind: 'bad_response', detail: `HTTP ${status} body larger than ${MAX_BODY_BYTES} bytes` }
  if (status !== 200) {
    // A proxy error page, not WeChat: a short excerpt helps the operator (it cannot hold a secret).
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
  return { kind: 'ok', body: b }
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
