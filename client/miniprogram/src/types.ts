/** The public shapes of the client: options, inputs, results. */
import type { Events, SessionInfo } from './auth'
import type { WegateError } from './errors'
import type { Platform, Response, SocketTask } from './platform'

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
