/**
 * Errors: the gateway's envelope `{code, message, data}` as a thrown value, and
 * the few codes the client acts on (the full catalog is the gateway's
 * docs/errors.md).
 */

/** Envelope codes (docs/errors.md) and the client's own (negative). */
export const Codes = {
  /** The platform's request/login/connectSocket failed: no HTTP answer (offline, DNS, TLS, timeout). */
  NETWORK: -1,
  /** The platform answered something that is not the gateway's envelope (wrong baseUrl, a proxy's page). */
  BAD_ANSWER: -2,
  WECHAT_CODE_INVALID: 10001,
  WECHAT_CODE_USED: 10002,
  WECHAT_USER_RISKY: 10003,
  /** /auth/decrypt: no session_key stored for the user: log in again. */
  WECHAT_SESSION_MISSING: 10004,
  /** /auth/decrypt: stale session_key (wx.login was called after logging in): log in, fetch the data again. */
  DECRYPT_FAILED: 10005,
  DECRYPT_WRONG_APP: 10006,
  DECRYPT_TOO_OLD: 10007,
  SIGNATURE_MISMATCH: 10008,
  /** /auth/phone: the button's code is invalid, expired or used: ask the user to tap again. */
  PHONE_CODE_INVALID: 10009,
  TOKEN_MISSING: 20001,
  TOKEN_EXPIRED: 20004,
  TOKEN_REVOKED: 20006,
  TOKEN_CLAIMS_INVALID: 20007,
  REFRESH_INVALID: 20010,
  REFRESH_REUSED: 20011,
  REFRESH_EXPIRED: 20012
} as const

/** The gateway's answer body for everything it produces itself. */
export interface Envelope<T = unknown> {
  code: number
  message: string
  data: T
}

/** An error from the gateway (its envelope's `code` / `message`), or from the platform (`code` < 0). */
export class WegateError extends Error {
  /** The envelope's code (e.g. 10003), or Codes.NETWORK / Codes.BAD_ANSWER. */
  readonly code: number
  /** HTTP status of the answer; 0 when there was none. */
  readonly statusCode: number
  /** The envelope's data (e.g. the validation errors), or the platform's error object. */
  readonly data: unknown
  /** The platform's errMsg when the platform failed (e.g. "request:fail timeout"). */
  readonly errMsg: string | undefined

  constructor (code: number, message: string, statusCode = 0, data: unknown = null, errMsg?: string) {
    super(message)
    this.name = 'WegateError'
    this.code = code
    this.statusCode = statusCode
    this.data = data
    this.errMsg = errMsg
  }
}

/** The envelope in a response body (an object, or a JSON string when the platform did not parse it); null otherwise. */
export function envelopeOf (body: unknown): Envelope | null {
  let v = body
  if (typeof v === 'string') {
    try { v = JSON.parse(v) } catch { return null }
  }
  if (typeof v !== 'object' || v === null) return null
  const e = v as Partial<Envelope>
  return typeof e.code === 'number' && typeof e.message === 'string' ? (e as Envelope) : null
}

/** A WegateError for an answer that is not a success. */
export function errorFromAnswer (statusCode: number, body: unknown): WegateError {
  const env = envelopeOf(body)
  if (env === null) return new WegateError(Codes.BAD_ANSWER, `unexpected answer (HTTP ${statusCode}), not a wegate envelope`, statusCode, body)
  return new WegateError(env.code, env.message, statusCode, env.data)
}

/** A WegateError for a platform failure (a `fail` callback, a rejected promise, a throw). */
export function errorFromPlatform (api: string, err: unknown): WegateError {
  if (err instanceof WegateError) return err
  const e = (typeof err === 'object' && err !== null ? err : {}) as { errMsg?: unknown, message?: unknown }
  const errMsg = typeof e.errMsg === 'string' ? e.errMsg : typeof e.message === 'string' ? e.message : `${api}:fail`
  return new WegateError(Codes.NETWORK, `${api} failed: ${errMsg}`, 0, err, errMsg)
}
