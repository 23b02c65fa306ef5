/**
 * The mini program's side of the credential hub, all with the caller's Bearer
 * access token: POST /auth/decrypt (open data with the stored session_key),
 * POST /auth/phone (the phone button's code → a verified number, kept with the
 * session), GET /auth/session (is the stored session_key still WeChat's?).
 * Identity and session_key come through narrow functions the app passes in.
 */
import type { FastifyInstance } from 'fastify'
import { GatewayError, ok, type ErrorName } from '../errors.js'
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
  rateLimit: (endpoint: 'phone' | 'decrypt', openid: string, ip: string) => Promise<Record<string, string>>
  metrics: Metrics
  now: () => number
}

// base64 of WeChat's open data: a month of wx.getWeRunData is ~2 KB; 64 KiB is generous.
const MAX_DATA = 65_536
const decryptSchema = {
  body: {
    type: 'object',
    required: ['encryptedData', 'iv'],
    properties: {
      encryptedData: { type: 'string', minLength: 1, maxLength: MAX_DATA },
      iv: { type: 'string', minLength: 1, maxLength: 64 },
      rawData: { type: 'string', maxLength: MAX_DATA },
      signature: { type: 'string', maxLength: 128 }
    }
  }
} as const
// The phone button's code, like wx.login's, is 32 characters today.
const phoneSchema = { body: { type: 'object', required: ['code'], properties: { code: { type: 'string', minLength: 1, maxLength: 128 } } } } as const

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

  app.get('/auth/session', async (request) => {
    request.routeName = 'auth_session'
    const caller = opts.authenticate(request.headers.authorization)
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
