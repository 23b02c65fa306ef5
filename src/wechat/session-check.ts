/**
 * Is the user's server-side session_key still the one WeChat holds? `GET
 * /wxa/checksession` with hmac_sha256(session_key, "") answers it (87009: no), so a
 * mini program asks before sending encryptedData instead of guessing.
 */
import type { Logger } from 'pino'
import type { AccessTokenService } from './access-token.js'
import { serviceError } from './api-errors.js'
import { sessionSignature } from './decrypt.js'
import type { WeChatHttp } from './http.js'

// WeChat's answer for a signature that is not the current session_key's.
const INVALID_SIGNATURE = 87009

/** True when WeChat still holds `sessionKey` for the user. Throws WECHAT_* catalog errors. */
export async function checkSessionKey (deps: { tokens: AccessTokenService, http: () => WeChatHttp, logger: Logger }, appId: string, openid: string, sessionKey: string): Promise<boolean> {
  const signature = sessionSignature(sessionKey)
  const r = await deps.tokens.call(appId, (accessToken) => ({
    api: 'checksession',
    method: 'GET',
    path: '/wxa/checksession',
    query: { access_token: accessToken, signature, openid, sig_method: 'hmac_sha256' },
    log: { appId }
  }))
  if (r.kind === 'ok') return true
  if (r.kind === 'errcode' && r.errcode === INVALID_SIGNATURE) return false
  throw serviceError(deps.logger, 'checksession', r, deps.http().timeoutMs, { appId })
}
