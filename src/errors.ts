/**
 * The one catalog of error codes wegate answers with. Ranges follow the seed:
 * 1xxxx WeChat login, 2xxxx authentication, 3xxxx traffic, 4xxxx validation,
 * 5xxxx system. docs/errors.md publishes this table; a test keeps them in step.
 */
export const ErrorCatalog = {
  // 1xxxx: the user's WeChat login
  WECHAT_CODE_INVALID: { code: 10001, status: 401, message: 'WeChat login code is invalid or expired; call wx.login again' },
  WECHAT_CODE_USED: { code: 10002, status: 401, message: 'WeChat login code was already used; call wx.login again' },
  WECHAT_USER_RISKY: { code: 10003, status: 403, message: 'WeChat refused this login as high-risk' },
  WECHAT_SESSION_MISSING: { code: 10004, status: 401, message: 'No WeChat session for this user; call wx.login and log in again' },
  DECRYPT_FAILED: { code: 10005, status: 400, message: 'Could not decrypt with the current WeChat session; call wx.login, log in again, then fetch the data again' },
  DECRYPT_WRONG_APP: { code: 10006, status: 403, message: 'Encrypted data was issued for another mini program' },
  DECRYPT_TOO_OLD: { code: 10007, status: 400, message: 'Encrypted data is too old; fetch it again' },
  SIGNATURE_MISMATCH: { code: 10008, status: 403, message: 'rawData signature does not match the WeChat session; call wx.login, log in again, then retry' },
  PHONE_CODE_INVALID: { code: 10009, status: 400, message: 'Phone number code is invalid, expired or already used; ask the user to tap the button again' },
  LOGIN_STATE_INVALID: { code: 10010, status: 400, message: 'This WeChat login is unknown, expired, already finished or was started in another browser; start the login again' },
  LOGIN_TICKET_INVALID: { code: 10011, status: 401, message: 'Login ticket is invalid, expired or already used; start the login again' },
  LOGIN_TICKET_OTHER_BROWSER: { code: 10012, status: 403, message: 'Login ticket belongs to a login started in another browser (login cookie or codeVerifier missing or different); start the login again' },

  // 2xxxx: authentication
  TOKEN_MISSING: { code: 20001, status: 401, message: 'Missing access token' },
  TOKEN_MALFORMED: { code: 20002, status: 401, message: 'Malformed access token' },
  TOKEN_BAD_SIGNATURE: { code: 20003, status: 401, message: 'Access token signature is invalid' },
  TOKEN_EXPIRED: { code: 20004, status: 401, message: 'Access token has expired' },
  TOKEN_NOT_YET_VALID: { code: 20005, status: 401, message: 'Access token is not valid yet' },
  TOKEN_REVOKED: { code: 20006, status: 401, message: 'Access token has been revoked' },
  TOKEN_CLAIMS_INVALID: { code: 20007, status: 401, message: 'Access token was not issued for this gateway' },
  REFRESH_INVALID: { code: 20010, status: 401, message: 'Refresh token is invalid' },
  REFRESH_REUSED: { code: 20011, status: 401, message: 'Refresh token was already used; the session has been ended' },
  REFRESH_EXPIRED: { code: 20012, status: 401, message: 'Refresh token has expired; log in again' },
  ADMIN_TOKEN_INVALID: { code: 20013, status: 401, message: 'Missing or wrong admin API token' },
  SESSION_APP_UNKNOWN: { code: 20014, status: 401, message: 'Session belongs to a mini program this gateway does not serve' },

  // 3xxxx: traffic
  RATE_LIMITED: { code: 30001, status: 429, message: 'Too many requests' },
  NO_ROUTE: { code: 30004, status: 404, message: 'No route matches this path' },
  METHOD_NOT_ALLOWED: { code: 30005, status: 405, message: 'Method not allowed' },
  REQUEST_TIMEOUT: { code: 30008, status: 408, message: 'Request was not received in time' },
  BODY_TOO_LARGE: { code: 30013, status: 413, message: 'Request body is too large' },
  HEADERS_TOO_LARGE: { code: 30031, status: 431, message: 'Request headers are too large' },
  NO_JWKS: { code: 30032, status: 404, message: 'No JWKS: tokens are signed with a shared secret (HS256)' },
  TUNNELS_PER_CALLER: { code: 30033, status: 429, message: 'Too many open WebSocket connections for this caller' },
  EXPECTATION_FAILED: { code: 30034, status: 417, message: 'Unsupported Expect header: only 100-continue is supported' },
  ROLLOUT_UNKNOWN: { code: 30035, status: 404, message: 'No automatic ramp on this route' },

  // 4xxxx: validation
  BAD_REQUEST: { code: 40000, status: 400, message: 'Malformed request' },
  VALIDATION_FAILED: { code: 40001, status: 400, message: 'Request body failed validation' },
  UNKNOWN_APP: { code: 40002, status: 400, message: 'Unknown appId' },
  BAD_PATH: { code: 40003, status: 400, message: 'Request path cannot be normalised safely' },
  ENCRYPTED_DATA_MALFORMED: { code: 40004, status: 400, message: 'encryptedData and iv must be base64; iv must decode to 16 bytes' },
  UNSUPPORTED_MEDIA_TYPE: { code: 40015, status: 415, message: 'Unsupported Content-Type; send application/json' },
  REDIRECT_NOT_ALLOWED: { code: 40016, status: 400, message: 'redirect is not one of the app\'s allowed URLs' },
  WRONG_LOGIN_FLOW: { code: 40017, status: 400, message: 'This app does not log in this way' },
  ROLLOUT_CONFLICT: { code: 40018, status: 409, message: 'The ramp cannot do that in its current state' },

  // 5xxxx: system
  INTERNAL: { code: 50000, status: 500, message: 'Internal error' },
  WECHAT_UNAVAILABLE: { code: 50001, status: 503, message: 'WeChat is busy or unreachable; try again shortly' },
  WECHAT_QUOTA: { code: 50002, status: 503, message: 'WeChat login quota reached; try again later' },
  WECHAT_BAD_RESPONSE: { code: 50003, status: 502, message: 'WeChat answered with something unexpected' },
  WECHAT_MISCONFIGURED: { code: 50004, status: 503, message: 'Login is unavailable because of a gateway configuration problem' },
  WECHAT_TIMEOUT: { code: 50005, status: 504, message: 'WeChat did not answer in time' },
  WECHAT_API_QUOTA: { code: 50006, status: 503, message: 'WeChat API quota reached; try again later' },
  WECHAT_SERVICE_MISCONFIGURED: { code: 50007, status: 503, message: 'WeChat services are unavailable because of a gateway configuration problem' },
  WECHAT_TOKEN_REJECTED: { code: 50008, status: 503, message: 'WeChat rejected the app access token; try again shortly' },
  STORE_UNAVAILABLE: { code: 50010, status: 503, message: 'Session store is unavailable' },
  UPSTREAM_UNAVAILABLE: { code: 50020, status: 502, message: 'Upstream service is unavailable' },
  UPSTREAM_TIMEOUT: { code: 50021, status: 504, message: 'Upstream service did not answer in time' },
  SHUTTING_DOWN: { code: 50030, status: 503, message: 'Gateway is shutting down' },
  TUNNELS_FULL: { code: 50031, status: 503, message: 'Gateway has no room for more WebSocket connections; try again shortly' },
  WORKERS_UNAVAILABLE: { code: 50032, status: 503, message: 'No gateway worker could answer; try again shortly' }
} as const satisfies Record<string, { code: number, status: number, message: string }>

export type ErrorName = keyof typeof ErrorCatalog

/**
 * An error the gateway answers with itself. `message` is what the client sees;
 * `cause` and `detail` are for the log line only.
 */
export class GatewayError extends Error {
  readonly errorName: ErrorName
  readonly code: number
  readonly statusCode: number
  readonly data: Record<string, unknown> | null
  readonly headers: Record<string, string> | undefined
  /** Operator-facing detail, logged, never sent. */
  readonly detail: string | undefined

  constructor (name: ErrorName, opts: {
    message?: string
    data?: Record<string, unknown> | null
    headers?: Record<string, string>
    detail?: string
    cause?: unknown
  } = {}) {
    const entry = ErrorCatalog[name]
    // A client's mistake (4xx) is an answer, not a fault: no stack to capture. An
    // attacker's flood of forged tokens costs a table lookup, not a stack walk each.
    const limit = Error.stackTraceLimit
    if (entry.status < 500) Error.stackTraceLimit = 0
    super(opts.message ?? entry.message, opts.cause === undefined ? undefined : { cause: opts.cause })
    Error.stackTraceLimit = limit
    this.name = 'GatewayError'
    this.errorName = name
    this.code = entry.code
    this.statusCode = entry.status
    this.data = opts.data ?? null
    this.headers = opts.headers
    this.detail = opts.detail
  }
}

export interface Envelope<T = unknown> {
  code: number
  message: string
  data: T
}

/** The success envelope. */
export function ok<T> (data: T): Envelope<T> {
  return { code: 200, message: 'ok', data }
}

/** The envelope body for a catalog error. */
export function envelopeOf (err: GatewayError): Envelope<Record<string, unknown> | null> {
  return { code: err.code, message: err.message, data: err.data }
}

// The serialised envelope of each catalog entry with its own message and no data (most answers).
const PLAIN_BODIES = new Map<string, string>(Object.entries(ErrorCatalog).map(([name, e]) =>
  [name, JSON.stringify({ code: e.code, message: e.message, data: null })]))

/** The envelope as JSON text; the catalog's own answers are serialised once, at start. */
export function envelopeText (err: GatewayError): string {
  if (err.data === null && err.message === ErrorCatalog[err.errorName].message) return PLAIN_BODIES.get(err.errorName)!
  return JSON.stringify(envelopeOf(err))
}
