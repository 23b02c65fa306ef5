/**
 * What a failed call to one of WeChat's service APIs (stable_token,
 * getuserphonenumber, checksession) means for the client, and what the operator
 * must do about it: one mapping, logged once, for every API the hub calls.
 */
import type { Logger } from 'pino'
import { errcodeFailure, transportError, WeChatError, type WeChatFailed } from './http.js'

/** errcodes that say the access_token itself is bad: refresh it and retry once. */
export const TOKEN_ERRCODES: ReadonlySet<number> = new Set([40001, 42001, 40014])

/** The catalog error for a failed service API call; `fields` (appId…) go to the log line. */
export function serviceError (log: Logger, api: string, r: WeChatFailed, timeoutMs: number, fields: { appId: string }): WeChatError {
  if (r.kind !== 'errcode') return transportError(log, r, api, timeoutMs, fields)
  const wechat = errcodeFailure(r)
  const line = { ...fields, api, attempts: r.attempts, errcode: r.errcode, rid: r.rid, errmsg: r.errmsg }
  const detail = `WeChat ${api} errcode ${r.errcode}: ${r.errmsg}`
  switch (r.errcode) {
    case -1:
      log.warn(line, `WeChat is busy (errcode -1) and stayed busy through every retry of ${api}`)
      return new WeChatError('WECHAT_UNAVAILABLE', wechat, { detail })
    case 45011:
      log.warn(line, `WeChat ${api} minute quota reached`)
      // 60 s: the quota is per minute.
      return new WeChatError('WECHAT_API_QUOTA', wechat, { detail, headers: { 'Retry-After': '60' } })
    case 45009:
      log.error(line, `WeChat ${api} daily quota reached (forced token refreshes: 20 a day)`)
      // 1 h: a daily quota; the client should not hammer.
      return new WeChatError('WECHAT_API_QUOTA', wechat, { detail, headers: { 'Retry-After': '3600' } })
    case 40013:
      log.error(line, `WeChat rejected the appId ${fields.appId} as invalid: check wechat.apps[].appId in the gateway config`)
      return new WeChatError('WECHAT_SERVICE_MISCONFIGURED', wechat, { detail })
    case 40125:
      log.error(line, `WeChat rejected the AppSecret of app ${fields.appId}: check wechat.apps[].secret in the gateway config (or the variable it comes from); it may have been reset on mp.weixin.qq.com`)
      return new WeChatError('WECHAT_SERVICE_MISCONFIGURED', wechat, { detail })
    case 40164:
      log.error(line, `WeChat refused ${api} from this address: add the gateway's egress IP addresses to the IP whitelist of app ${fields.appId} on mp.weixin.qq.com`)
      return new WeChatError('WECHAT_SERVICE_MISCONFIGURED', wechat, { detail })
    default:
      if (TOKEN_ERRCODES.has(r.errcode)) {
        log.warn(line, `WeChat ${api} refused the app's access_token again after a refresh`)
        return new WeChatError('WECHAT_TOKEN_REJECTED', wechat, { detail })
      }
      log.error(line, `WeChat answered ${api} with an unexpected errcode`)
      return new WeChatError('WECHAT_BAD_RESPONSE', wechat, { detail })
  }
}
