/**
 * The client for WeChat's code2Session (`GET /sns/jscode2session`) on the shared
 * WeChat transport (src/wechat/http.ts: pool, timeouts, retries of what is
 * transient), turning every outcome into a catalog error that carries WeChat's
 * errcode and rid for logs and metrics. The AppSecret, the code and session_key
 * never reach a log line; neither does the request URL, because it contains the secret.
 */
import type { Logger } from 'pino'
import type { AppType } from '../config/schema.js'
import { badResponse, createWeChatHttp, errcodeFailure, transportError, WeChatError, type WeChatHttp, type WeChatOutcome } from '../wechat/http.js'

export { WeChatError, type WeChatFailure, type WeChatFailureKind } from '../wechat/http.js'

export interface WeChatApp {
  appId: string
  secret: string
  /** The channel (default miniprogram): how its users log in (docs/channels.md). */
  type?: AppType
  /** officialAccount / website: the URL prefixes a browser login may return to. */
  redirects?: readonly string[]
  /** officialAccount / website: what binds a ticket to its browser (default cookie; web-login.ts). */
  loginBinding?: 'cookie' | 'codeChallenge'
}

export interface WeChatSession {
  openid: string
  /** Mini programs (code2Session). Never logged, never sent to a client. */
  sessionKey?: string
  /** Web and App channels (sns/oauth2): WeChat's access_token and refresh_token, as JSON. Never logged, never sent to a client. */
  grant?: string
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

/** A client on a transport the caller already has (shared with the other WeChat calls; closing the client closes it). */
export interface WeChatClientOnTransport {
  http: WeChatHttp
  logger: Logger
}

export interface WeChatClient {
  /** Exchange a `wx.login` code for the user's openid (and unionid, session_key). Throws WeChatError. */
  code2Session (app: WeChatApp, code: string): Promise<WeChatSession & { sessionKey: string }>
  /** Exchange a web page's or the App SDK's code (sns/oauth2/access_token) for the user's openid, unionid and WeChat's tokens. Throws WeChatError. */
  oauth2Session (app: WeChatApp, code: string): Promise<WeChatSession>
  /** The exchange of the app's channel: oauth2Session for web and App channels, else code2Session. */
  exchangeCode (app: WeChatApp, code: string): Promise<WeChatSession>
  /** The longest one code2Session call can take, ms: every attempt's timeout plus the backoff between them. */
  readonly budgetMs: number
  /** Close the connection pool (waits for calls in flight). */
  close (): Promise<void>
}

/** Create the code2Session client; one pool for the life of the process (or of a config snapshot). */
export function createWeChatClient (opts: WeChatClientOptions | WeChatClientOnTransport): WeChatClient {
  const log = opts.logger.child({ component: 'wechat' })
  const http = 'http' in opts ? opts.http : createWeChatHttp({ ...opts, logger: log })

  /** Call a code exchange; its answer once it has an openid and `field` (a secret: only field names are ever logged). */
  async function exchange (app: WeChatApp, api: string, path: string, code: Record<string, string>, field: string): Promise<{ b: Record<string, unknown>, attempts: number }> {
    const r = await http.call({
      api,
      method: 'GET',
      path,
      query: { appid: app.appId, secret: app.secret, ...code, grant_type: 'authorization_code' },
      log: { appId: app.appId }
    })
    if (r.kind !== 'ok') throw fail(app, r, api)
    const b = r.body
    if (typeof b.openid !== 'string' || b.openid === '' || typeof b[field] !== 'string' || b[field] === '') {
      const detail = `HTTP 200 JSON without openid/${field} (fields: ${Object.keys(b).join(', ') || 'none'})`
      log.error({ appId: app.appId, attempts: r.attempts, detail }, `WeChat answered with something that is not a ${api} answer`)
      throw badResponse(detail, r.attempts)
    }
    return { b, attempts: r.attempts }
  }

  async function code2Session (app: WeChatApp, code: string): Promise<WeChatSession & { sessionKey: string }> {
    const { b, attempts } = await exchange(app, 'code2Session', '/sns/jscode2session', { js_code: code }, 'session_key')
    const session: WeChatSession & { sessionKey: string } = { openid: b.openid as string, sessionKey: b.session_key as string }
    if (typeof b.unionid === 'string' && b.unionid !== '') session.unionid = b.unionid
    log.debug({ appId: app.appId, attempts, unionid: session.unionid !== undefined }, 'WeChat code2Session ok')
    return session
  }

  async function oauth2Session (app: WeChatApp, code: string): Promise<WeChatSession> {
    const { b, attempts } = await exchange(app, 'oauth2', '/sns/oauth2/access_token', { code }, 'access_token')
    const grant = { accessToken: b.access_token, refreshToken: b.refresh_token, expiresIn: b.expires_in, scope: b.scope }
    const session: WeChatSession = { openid: b.openid as string, grant: JSON.stringify(grant) }
    if (typeof b.unionid === 'string' && b.unionid !== '') session.unionid = b.unionid
    log.debug({ appId: app.appId, attempts, unionid: session.unionid !== undefined }, 'WeChat oauth2 access_token ok')
    return session
  }

  /** Log the final failure once and build the error the caller throws. */
  function fail (app: WeChatApp, r: Exclude<WeChatOutcome, { kind: 'ok' }>, api: string): WeChatError {
    const appId = app.appId
    if (r.kind !== 'errcode') return transportError(log, r, api, http.timeoutMs, { appId })
    const wechat = errcodeFailure(r)
    const attempts = r.attempts
    const fields = { appId, attempts, errcode: r.errcode, rid: r.rid, errmsg: r.errmsg }
    const detail = `WeChat errcode ${r.errcode}: ${r.errmsg}`
    switch (r.errcode) {
      case 40029:
      case 41008:
        log.info(fields, 'WeChat rejected the login code as invalid')
        return new WeChatError('WECHAT_CODE_INVALID', wechat, { detail })
      case 40163:
        log.info(fields, r.uncertain
          ? 'WeChat says the login code was already used, probably by an earlier attempt that timed out or lost its connection'
          : 'WeChat says the login code was already used')
        return new WeChatError('WECHAT_CODE_USED', wechat, { detail: r.uncertain ? detail + ' (probably spent by an earlier attempt of this call)' : detail })
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
        log.error(fields, `WeChat answered ${api} with an unexpected errcode`)
        return new WeChatError('WECHAT_BAD_RESPONSE', wechat, { detail })
    }
  }

  return {
    code2Session,
    oauth2Session,
    exchangeCode: (app, code) => app.type === undefined || app.type === 'miniprogram' ? code2Session(app, code) : oauth2Session(app, code),
    budgetMs: http.budgetMs,
    close: () => http.close()
  }
}
