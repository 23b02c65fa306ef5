/**
 * createClient: requests with the token, renewal on the gateway's token errors
 * (once, shared), the gateway's WeChat endpoints, sockets and logout.
 */
import { Auth, post, type AuthContext, type Events, type LogoutEvent, type SessionInfo } from './auth'
import { Codes, envelopeOf, errorFromAnswer, WegateError } from './errors'
import { httpRequest, openSocket, type Platform, type Response, type SocketTask } from './platform'
import { SessionStore, type Session } from './session'
import { parseBase, resolve } from './url'

export interface ClientOptions {
  /** The gateway, e.g. `https://api.example.com` (a path prefix is allowed). */
  baseUrl: string
  /** The platform object: `wx`, `Taro` or `uni`. */
  wx: Platform
  /** Sent with every login; required when the gateway serves several mini programs. */
  appId?: string
  /** Storage key of the session (default `wegate.session`). */
  storageKey?: string
  /** Timeout (ms) for the gateway's own endpoints; default: the platform's. */
  timeout?: number
  /** Clock in ms (default Date.now). Only differences matter: the server's expiresIn is counted from receipt. */
  now?: () => number
  onLogin?: Events['login']
  onLogout?: Events['logout']
  onAuthError?: Events['authError']
}

export interface RequestOptions {
  /** Relative to baseUrl (`/api/orders`) or absolute (another host gets no token). */
  url: string
  method?: string
  data?: unknown
  header?: Record<string, string>
  /** false: no login and no token, even to the gateway (public routes). */
  auth?: boolean
  /** Anything else (timeout, dataType, responseType, enableHttp2, …) goes to the platform as given. */
  [option: string]: unknown
}

export interface SocketOptions {
  url: string
  header?: Record<string, string>
  protocols?: string[]
  auth?: boolean
  [option: string]: unknown
}

export interface PhoneNumber {
  phoneNumber: string
  purePhoneNumber: string
  countryCode: string
}

export interface DecryptInput {
  encryptedData: string
  iv: string
  rawData?: string
  signature?: string
}

export interface LogoutResult {
  /** The gateway revoked the session (false: offline or refused; the tokens are forgotten anyway). */
  revoked: boolean
  error?: WegateError
}

export interface WegateClient {
  login: (opts?: { force?: boolean }) => Promise<SessionInfo>
  request: <T = any>(opts: RequestOptions) => Promise<Response<T>>
  getPhoneNumber: (code: string) => Promise<PhoneNumber>
  /**
   * POST /auth/decrypt. Given a function that fetches the data (e.g. `() => wx.getWeRunData()`),
   * a stale session_key (10004 / 10005 / 10008) is handled: one new login, the data fetched again, one retry.
   */
  decrypt: <T = any>(input: DecryptInput | (() => DecryptInput | PromiseLike<DecryptInput>)) => Promise<T>
  connectSocket: (opts: SocketOptions) => Promise<SocketTask>
  logout: (opts?: { all?: boolean }) => Promise<LogoutResult>
  /** The stored session, or null (no request made). */
  session: () => SessionInfo | null
  onLogin: (fn: Events['login']) => () => void
  onLogout: (fn: Events['logout']) => () => void
  onAuthError: (fn: Events['authError']) => () => void
}

/** /auth/decrypt's answers that a new login (a new session_key) and freshly fetched data fix. */
const STALE_SESSION_KEY: number[] = [Codes.WECHAT_SESSION_MISSING, Codes.DECRYPT_FAILED, Codes.SIGNATURE_MISMATCH]

function decryptBody (input: DecryptInput): DecryptInput {
  if (typeof input?.encryptedData !== 'string' || typeof input.iv !== 'string') throw new TypeError('wegate-miniprogram: decrypt needs { encryptedData, iv } strings')
  const body: DecryptInput = { encryptedData: input.encryptedData, iv: input.iv }
  if (input.rawData !== undefined) body.rawData = input.rawData
  if (input.signature !== undefined) body.signature = input.signature
  return body
}

/** A token error from the gateway itself (401 with an envelope code 20001–20007), else 0. */
function tokenError (res: Response): number {
  if (res.statusCode !== 401) return 0
  const code = envelopeOf(res.data)?.code ?? 0
  return code >= 20001 && code <= 20007 ? code : 0
}

function withoutAuthorization (header: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const k of Object.keys(header ?? {})) {
    if (k.toLowerCase() !== 'authorization') out[k] = (header as Record<string, string>)[k]
  }
  return out
}

function platformOf (opts: ClientOptions): Platform {
  const p = opts?.wx
  if (typeof p !== 'object' || p === null || typeof p.request !== 'function' || typeof p.login !== 'function' ||
    typeof p.getStorageSync !== 'function' || typeof p.setStorageSync !== 'function' || typeof p.removeStorageSync !== 'function') {
    throw new TypeError('wegate-miniprogram: pass the platform object as `wx` (wx, Taro or uni)')
  }
  return p
}

function hooks (opts: ClientOptions): { [K in keyof Events]: Array<Events[K]> } {
  return {
    login: opts.onLogin === undefined ? [] : [opts.onLogin],
    logout: opts.onLogout === undefined ? [] : [opts.onLogout],
    authError: opts.onAuthError === undefined ? [] : [opts.onAuthError]
  }
}

export function createClient (opts: ClientOptions): WegateClient {
  const platform = platformOf(opts)
  const base = parseBase(opts.baseUrl)
  const key = opts.storageKey ?? 'wegate.session'
  const listeners = hooks(opts)
  const ctx: AuthContext = {
    platform,
    base,
    appId: opts.appId,
    timeout: opts.timeout,
    now: opts.now ?? Date.now,
    store: new SessionStore(platform, key),
    emit: (name, arg) => {
      for (const fn of listeners[name].slice()) {
        try { (fn as (a: typeof arg) => void)(arg) } catch {} // an app's hook never breaks the library
      }
    }
  }
  const auth = new Auth(ctx, key)

  const listen = <K extends keyof Events>(name: K) => (fn: Events[K]): () => void => {
    listeners[name].push(fn)
    return () => {
      const i = listeners[name].indexOf(fn)
      if (i !== -1) listeners[name].splice(i, 1)
    }
  }

  async function send (url: string, o: RequestOptions, token: string | undefined): Promise<Response> {
    const { url: _u, header, auth: _a, success: _s, fail: _f, complete: _c, ...rest } = o
    const h = token === undefined ? { ...(header ?? {}) } : { ...withoutAuthorization(header), Authorization: `Bearer ${token}` }
    return await httpRequest(platform, { ...rest, url, method: (o.method ?? 'GET').toUpperCase(), header: h })
  }

  async function request (o: RequestOptions): Promise<Response> {
    const target = resolve(base, o?.url)
    if (!target.ours || o.auth === false) return await send(target.url, o, undefined)
    const session = await auth.reporting(() => auth.ensure())
    const first = await send(target.url, o, session.accessToken)
    const code = tokenError(first)
    if (code === 0) return first
    const renewed = await auth.reporting(() => auth.renew(session.accessToken, code))
    return await send(target.url, o, renewed.accessToken) // once: whatever this answers is the caller's
  }

  /** POST to one of the gateway's WeChat endpoints with the token; the envelope's data, or a WegateError. */
  async function gatewayCall<T> (path: string, body: unknown): Promise<T> {
    const res = await request({ url: path, method: 'POST', data: body, header: { 'content-type': 'application/json' }, dataType: 'json' })
    const env = envelopeOf(res.data)
    if (res.statusCode === 200 && env !== null && env.code === 200) return env.data as T
    throw errorFromAnswer(res.statusCode, res.data)
  }

  async function logout (o: { all?: boolean } = {}): Promise<LogoutResult> {
    const inflight = auth.pending()
    if (inflight !== undefined) await inflight.catch(() => undefined)
    const s = ctx.store.load()
    if (s === null) return { revoked: false }
    const body = o.all === true ? { all: true } : {}
    let result: LogoutResult
    try {
      let res = await post(ctx, '/auth/logout', body, s.accessToken)
      if (tokenError(res) === Codes.TOKEN_EXPIRED) {
        // An expired access token cannot log out: rotate once (never log in) and try again.
        const renewed: Session | null = await auth.refreshOnly(s)
        if (renewed !== null) res = await post(ctx, '/auth/logout', body, renewed.accessToken)
      }
      const env = envelopeOf(res.data)
      result = res.statusCode === 200 && env?.code === 200 ? { revoked: true } : { revoked: false, error: errorFromAnswer(res.statusCode, res.data) }
    } catch (err) {
      result = { revoked: false, error: err instanceof WegateError ? err : new WegateError(Codes.NETWORK, String(err)) }
    }
    auth.end(s, o.all === true ? 'logout-all' : 'logout')
    return result
  }

  return {
    login: async (o = {}) => await auth.reporting(() => auth.explicitLogin(o.force === true)),
    request: request as WegateClient['request'],
    getPhoneNumber: async (code) => {
      if (typeof code !== 'string' || code === '') throw new TypeError('wegate-miniprogram: getPhoneNumber needs e.detail.code from the button (empty: the user declined)')
      return await gatewayCall<PhoneNumber>('/auth/phone', { code })
    },
    decrypt: async (input) => {
      if (typeof input !== 'function') return await gatewayCall('/auth/decrypt', decryptBody(input))
      // Stale or missing session_key: log in again (new session_key), fetch the data again, once.
      try {
        return await gatewayCall('/auth/decrypt', decryptBody(await input()))
      } catch (err) {
        if (!(err instanceof WegateError) || !STALE_SESSION_KEY.includes(err.code)) throw err
      }
      await auth.reporting(() => auth.explicitLogin(true))
      return await gatewayCall('/auth/decrypt', decryptBody(await input()))
    },
    connectSocket: async (o) => {
      const target = resolve(base, o?.url, true)
      const { auth: useAuth, ...rest } = o
      if (!target.ours || useAuth === false) return await openSocket(platform, { ...rest, url: target.url })
      const session = await auth.reporting(() => auth.ensure())
      return await openSocket(platform, { ...rest, url: target.url, header: { ...withoutAuthorization(o.header), Authorization: `Bearer ${session.accessToken}` } })
    },
    logout,
    session: () => ctx.store.load(),
    onLogin: listen('login'),
    onLogout: listen('logout'),
    onAuthError: listen('authError')
  }
}

export type { LogoutEvent }
