/**
 * The phone-number button's code → a verified number (`POST
 * /wxa/business/getuserphonenumber` with the app's shared access_token), and where
 * the verified number is kept: per appId + openid, for the life of a login, so a
 * route with `injectPhone: true` can tell its upstream (`X-Phone-Number`).
 */
import type { Cluster, Redis } from 'ioredis'
import type { Logger } from 'pino'
import type { AccessTokenService } from './access-token.js'
import { serviceError } from './api-errors.js'
import { sameText } from './decrypt.js'
import { expiringMap, storeCall } from './kv.js'
import { badResponse, WeChatError, errcodeFailure, type WeChatHttp } from './http.js'

export interface PhoneNumber {
  /** With the country code for numbers outside mainland China, as WeChat gives it. */
  phoneNumber: string
  purePhoneNumber: string
  countryCode: string
}

/** The verified number as upstreams get it: `+<countryCode><purePhoneNumber>`. */
export function phoneHeader (p: PhoneNumber): string {
  return `+${p.countryCode}${p.purePhoneNumber}`
}

/** Ask WeChat for the number behind a phone button's code. Throws catalog errors (PHONE_CODE_INVALID, WECHAT_*). */
export async function fetchPhoneNumber (deps: { tokens: AccessTokenService, http: () => WeChatHttp, logger: Logger }, appId: string, code: string): Promise<PhoneNumber> {
  const r = await deps.tokens.call(appId, (accessToken) => ({
    api: 'getuserphonenumber',
    method: 'POST',
    path: '/wxa/business/getuserphonenumber',
    query: { access_token: accessToken },
    body: { code },
    log: { appId }
  }))
  const timeoutMs = deps.http().timeoutMs
  if (r.kind === 'errcode' && r.errcode === 40029) {
    // After a timeout or reset the code may have been spent by our own earlier attempt.
    const spent = r.uncertain ? ' (probably spent by an earlier attempt of this call)' : ''
    deps.logger.info({ appId, errcode: r.errcode, rid: r.rid, uncertain: r.uncertain }, 'WeChat rejected the phone code as invalid')
    throw new WeChatError('PHONE_CODE_INVALID', errcodeFailure(r), { detail: `errcode 40029: ${r.errmsg}${spent}` })
  }
  if (r.kind !== 'ok') throw serviceError(deps.logger, 'getuserphonenumber', r, timeoutMs, { appId })
  const info = r.body.phone_info
  const p = typeof info === 'object' && info !== null ? info as Record<string, unknown> : {}
  const country = typeof p.countryCode === 'number' || typeof p.countryCode === 'string' ? String(p.countryCode) : ''
  if (typeof p.purePhoneNumber !== 'string' || !/^\d{4,20}$/.test(p.purePhoneNumber) || !/^\d{1,4}$/.test(country) || typeof p.phoneNumber !== 'string') {
    deps.logger.error({ appId, fields: Object.keys(p) }, 'WeChat answered with something that is not a getuserphonenumber answer')
    throw badResponse('HTTP 200 JSON without a usable phone_info', r.attempts)
  }
  const mark = p.watermark as Record<string, unknown> | undefined
  if (typeof mark?.appid !== 'string' || !sameText(mark.appid, appId)) {
    // WeChat answered for another app: never trust such a number.
    deps.logger.error({ appId, watermark: mark?.appid }, 'getuserphonenumber answered with another app\'s watermark')
    throw badResponse(`phone_info.watermark.appid is ${String(mark?.appid)}, not ${appId}`, r.attempts)
  }
  return { phoneNumber: p.phoneNumber, purePhoneNumber: p.purePhoneNumber, countryCode: country }
}

/** Verified numbers, per appId + openid. */
export interface PhonePort {
  set (appId: string, openid: string, phone: PhoneNumber, ttlMs: number): Promise<void>
  get (appId: string, openid: string): Promise<PhoneNumber | null>
}

export function createMemoryPhones (now: () => number = Date.now): PhonePort {
  const phones = expiringMap<PhoneNumber>(now)
  return {
    async set (appId, openid, phone, ttlMs) {
      phones.set(appId + '\0' + openid, { ...phone }, ttlMs)
    },
    async get (appId, openid) {
      const p = phones.get(appId + '\0' + openid)
      return p === null ? null : { ...p }
    }
  }
}

/** On the store's Redis, next to the user's session_key (same hash tag). */
export function createRedisPhones (redis: Redis | Cluster, keyPrefix: string): PhonePort {
  const keyOf = (appId: string, openid: string) => `${keyPrefix}{u:${appId}:${openid}}:phone`
  return {
    async set (appId, openid, phone, ttlMs) {
      await storeCall('phoneSet', () => redis.set(keyOf(appId, openid), JSON.stringify(phone), 'PX', Math.max(1, Math.round(ttlMs))))
    },
    async get (appId, openid) {
      const text = await storeCall('phoneGet', () => redis.get(keyOf(appId, openid)))
      if (text === null) return null
      try {
        const p = JSON.parse(text) as PhoneNumber
        return typeof p.purePhoneNumber === 'string' && typeof p.countryCode === 'string' ? p : null
      } catch {
        return null
      }
    }
  }
}
