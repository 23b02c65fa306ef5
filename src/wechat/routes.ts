/**
 * The mini program's side of the credential hub, all with the caller's Bearer
 * access token: POST /auth/decrypt (open data with the stored session_key),
 * POST /auth/phone (the phone button's code → a verified number, kept with the
 * session), GET /auth/session (is the stored session_key still WeChat's?).
 * Identity and session_key come through narrow functions the app passes in.
 */
import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { GatewayError, ok, type ErrorName } from '../errors.js'
import { BODY_ERRORS, COMMON_ERRORS, TOKEN_ERRORS, envelope, errorResponses } from '../http/schemas.js'
import type { Metrics } from '../metrics/index.js'
import { decryptOpenData, type DecryptInput } from './decrypt.js'
import type { WeChatHub } from './hub.js'
import { fetchPhoneNumber } from './phone.js'
import { checkSessionKey } from './session-check.js'

/** Who is calling: the verified access token's app and user. Throws TOKEN_* errors. */
export type Authenticate = (authorization: string | undefined) => { appid: string, openid: string }

export interface WeChatRoutesOptions {
  hub: WeChatHub
  authenticate: Authenticate
  /** The user's stored session_key, null when none (expired or never logged in here). */
  sessionKey: (appId: string, openid: string) => Promise<string | null>
  /** Read per request from the current config: decrypt age limit (0: off) and how long a verified number is kept. */
  settings: () => { decryptMaxAgeMs: number, phoneTtlMs: number }
  /**
   * Count one call of the verified caller (`rateLimits.phone` / `.decrypt`): returns the
   * RateLimit-* headers, or throws RATE_LIMITED (429, Retry-After) past the limit.
   */
  rateLimit: (endpoint: 'phone' | 'decrypt' | 'session', openid: string, ip: string) => Promise<Record<string, string>>
  metrics: Metrics
  now: () => number
}

/** Tag of the credential hub's endpoints (gateway/openapi.ts describes it). */
export const TAG_WECHAT = 'WeChat services'
const ACCESS_TOKEN = [{ accessToken: [] }]
/** What WeChat's server API can answer a hub call with (api-errors.ts, http.ts). */
const WECHAT_API_ERRORS = ['WECHAT_UNAVAILABLE', 'WECHAT_API_QUOTA', 'WECHAT_BAD_RESPONSE', 'WECHAT_SERVICE_MISCONFIGURED', 'WECHAT_TOKEN_REJECTED', 'WECHAT_TIMEOUT'] as const

// base64 of WeChat's open data: a month of wx.getWeRunData is ~2 KB; 64 KiB is generous.
const MAX_DATA = 65_536
const decryptSchema = {
  tags: [TAG_WECHAT],
  operationId: 'decrypt',
  summary: 'Decrypt open data (wx.getWeRunData, getGroupEnterInfo, …) with the stored session_key',
  description: 'With `rawData` and `signature` (wx.getUserInfo) the signature is checked too. The watermark must name the ' +
    'token\'s app, and be younger than `wechat.decryptMaxAge` when that is set. A 10004/10005 means the session_key is ' +
    'gone or stale: call wx.login, log in again, then fetch the data again. Limited per user by `rateLimits.decrypt`.',
  security: ACCESS_TOKEN,
  body: {
    type: 'object',
    required: ['encryptedData', 'iv'],
    properties: {
      encryptedData: { type: 'string', minLength: 1, maxLength: MAX_DATA, description: 'base64, as the mini program API gave it' },
      iv: { type: 'string', minLength: 1, maxLength: 64, description: 'base64 of 16 bytes' },
      rawData: { type: 'string', maxLength: MAX_DATA },
      signature: { type: 'string', maxLength: 128, description: 'sha1(rawData + session_key), hex' }
    }
  },
  response: {
    200: envelope(Type.Object({}, { additionalProperties: true, description: 'The decrypted object as WeChat encrypted it, `watermark` included' }), 'The decrypted data'),
    ...errorResponses('WECHAT_SESSION_MISSING', 'DECRYPT_FAILED', 'DECRYPT_WRONG_APP', 'DECRYPT_TOO_OLD', 'SIGNATURE_MISMATCH', 'ENCRYPTED_DATA_MALFORMED', 'RATE_LIMITED', TOKEN_ERRORS, BODY_ERRORS, COMMON_ERRORS)
  }
} as const
// The phone button's code, like wx.login's, is 32 characters today.
const phoneSchema = {
  tags: [TAG_WECHAT],
  operationId: 'phone',
  summary: 'Verify the user\'s phone number from the phone button\'s code',
  description: '`<button open-type="getPhoneNumber">` gives a code; WeChat\'s getuserphonenumber turns it into the number, which is ' +
    'kept with the session: routes with `injectPhone: true` receive it as `X-Phone-Number`. Limited per user by `rateLimits.phone`.',
  security: ACCESS_TOKEN,
  body: { type: 'object', required: ['code'], properties: { code: { type: 'string', minLength: 1, maxLength: 128, description: 'The phone button\'s code (single use, 5 min)' } } },
  response: {
    200: envelope(Type.Object({
      phoneNumber: Type.String({ description: 'With the country code for numbers outside mainland China, as WeChat gives it' }),
      purePhoneNumber: Type.String(),
      countryCode: Type.String()
    }), 'The verified number'),
    ...errorResponses('PHONE_CODE_INVALID', WECHAT_API_ERRORS, 'UNKNOWN_APP', 'RATE_LIMITED', TOKEN_ERRORS, BODY_ERRORS, COMMON_ERRORS)
  }
} as const
const sessionSchema = {
  tags: [TAG_WECHAT],
  operationId: 'session',
  summary: 'Is the stored session_key still WeChat\'s? (checksession)',
  description: 'False when none is stored or WeChat no longer accepts it (the mini program called wx.login since): log in again ' +
    'before calling POST /auth/decrypt. Limited per user by `rateLimits.session`.',
  security: ACCESS_TOKEN,
  response: {
    200: envelope(Type.Object({ sessionKeyValid: Type.Boolean() }), 'Whether the session_key is valid'),
    ...errorResponses(WECHAT_API_ERRORS, 'UNKNOWN_APP', 'RATE_LIMITED', TOKEN_ERRORS, COMMON_ERRORS)
  }
} as const

const DECRYPT_RESULTS: Partial<Record<ErrorName, string>> = {
  WECHAT_SESSION_MISSING: 'no_session',
  ENCRYPTED_DATA_MALFORMED: 'malformed',
  DECRYPT_FAILED: 'failed',
  DECRYPT_WRONG_APP: 'wrong_app',
  DECRYPT_TOO_OLD: 'too_old',
  SIGNATURE_MISMATCH: 'signature',
  VALIDATION_FAILED: 'invalid'
}

export async function wechatRoutes (app: FastifyInstance, opts: WeChatRoutesOptions): Promise<void> {
  const { hub, metrics } = opts
  const deps = { tokens: hub.tokens, http: hub.http, logger: hub.logger }

  app.post<{ Body: DecryptInput }>('/auth/decrypt', { schema: decryptSchema }, async (request, reply) => {
    request.routeName = 'auth_decrypt'
    const caller = opts.authenticate(request.headers.authorization)
    reply.headers(await opts.rateLimit('decrypt', caller.openid, request.ip))
    try {
      const sessionKey = await opts.sessionKey(caller.appid, caller.openid)
      if (sessionKey === null) throw new GatewayError('WECHAT_SESSION_MISSING')
      const data = decryptOpenData(request.body, { appId: caller.appid, sessionKey, maxAgeMs: opts.settings().decryptMaxAgeMs, nowMs: opts.now() })
      metrics.decrypts.inc({ app: caller.appid, result: 'ok' })
      return ok(data)
    } catch (err) {
      const name = err instanceof GatewayError ? err.errorName : 'INTERNAL'
      metrics.decrypts.inc({ app: caller.appid, result: DECRYPT_RESULTS[name] ?? 'error' })
      throw err
    }
  })

  app.post<{ Body: { code: string } }>('/auth/phone', { schema: phoneSchema }, async (request, reply) => {
    request.routeName = 'auth_phone'
    const caller = opts.authenticate(request.headers.authorization)
    // before WeChat is asked: a caller past the limit spends nothing of the app's API quota
    reply.headers(await opts.rateLimit('phone', caller.openid, request.ip))
    try {
      const phone = await fetchPhoneNumber(deps, caller.appid, request.body.code)
      await hub.phones.set(caller.appid, caller.openid, phone, opts.settings().phoneTtlMs)
      metrics.phoneVerifications.inc({ app: caller.appid, result: 'ok' })
      // The number is personal data: the log line says that it happened, not what it is.
      request.log.info({ appid: caller.appid, openid: caller.openid }, 'phone number verified')
      return ok(phone)
    } catch (err) {
      const invalid = err instanceof GatewayError && err.errorName === 'PHONE_CODE_INVALID'
      metrics.phoneVerifications.inc({ app: caller.appid, result: invalid ? 'invalid_code' : 'failure' })
      throw err
    }
  })

  app.get('/auth/session', { schema: sessionSchema }, async (request, reply) => {
    request.routeName = 'auth_session'
    const caller = opts.authenticate(request.headers.authorization)
    reply.headers(await opts.rateLimit('session', caller.openid, request.ip))
    const sessionKey = await opts.sessionKey(caller.appid, caller.openid)
    // Nothing stored: not valid, and no need to ask WeChat.
    const valid = sessionKey !== null && await checkSessionKey(deps, caller.appid, caller.openid, sessionKey)
    return ok({ sessionKeyValid: valid })
  })

  // The gateway's own paths with another method: 405, like /auth/login.
  const notAllowed = async (): Promise<never> => { throw new GatewayError('METHOD_NOT_ALLOWED') }
  app.route({ method: ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url: '/auth/decrypt', handler: notAllowed })
  app.route({ method: ['GET', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url: '/auth/phone', handler: notAllowed })
  app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url: '/auth/session', handler: notAllowed })
}
