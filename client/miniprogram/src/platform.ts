/**
 * The platform object: native `wx`, Taro or uni (or anything of that shape).
 * Every async API is called with `success` / `fail` callbacks, which all three
 * support, and a returned promise is honoured too: Taro returns one (as well as
 * calling the callbacks), Taro's connectSocket resolves to the SocketTask, and a
 * promisified uni (Vue 2) resolves to `[err, res]`. Whichever answers first wins.
 */
import { errorFromPlatform } from './errors'

/** What `request` answers: the platform's response, any HTTP status. */
export interface Response<T = any> {
  statusCode: number
  data: T
  header: Record<string, string>
}

/** The socket task of wx / Taro / uni (only what this library touches is typed). */
export interface SocketTask {
  send: (opts: { data: string | ArrayBuffer, success?: (res: unknown) => void, fail?: (err: unknown) => void }) => unknown
  close: (opts?: { code?: number, reason?: string, success?: (res: unknown) => void, fail?: (err: unknown) => void }) => unknown
  onOpen: (cb: (res: any) => void) => unknown
  onMessage: (cb: (res: { data: string | ArrayBuffer }) => void) => unknown
  onClose: (cb: (res: { code: number, reason: string }) => void) => unknown
  onError: (cb: (err: any) => void) => unknown
}

type Api = (opts: any) => unknown

/** The part of `wx` / `Taro` / `uni` the client uses. */
export interface Platform {
  request: Api
  login: Api
  getStorageSync: (key: string) => unknown
  setStorageSync: (key: string, value: any) => unknown
  removeStorageSync: (key: string) => unknown
  /** Needed only for `client.connectSocket`. */
  connectSocket?: Api
}

function isThenable (v: unknown): v is PromiseLike<unknown> {
  return (typeof v === 'object' || typeof v === 'function') && v !== null && typeof (v as { then?: unknown }).then === 'function'
}

/**
 * Call `platform[name](opts)` and settle with the first answer: a `success` /
 * `fail` callback, or the returned promise (a `[err, res]` pair is unpacked).
 */
export function callApi (platform: Platform, name: 'request' | 'login', opts: Record<string, unknown>): Promise<any> {
  return new Promise((resolve, reject) => {
    let settled = false
    const ok = (v: unknown): void => { if (!settled) { settled = true; resolve(v) } }
    const ko = (e: unknown): void => { if (!settled) { settled = true; reject(e) } }
    let returned: unknown
    try {
      returned = platform[name]({ ...opts, success: ok, fail: ko })
    } catch (err) {
      ko(err)
      return
    }
    if (isThenable(returned)) {
      returned.then((v) => {
        if (Array.isArray(v) && v.length === 2) {
          if (v[0] !== null && v[0] !== undefined) ko(v[0])
          else ok(v[1])
        } else {
          ok(v)
        }
      }, ko)
    }
  })
}

/** Options passed through to the platform's request as given (timeout, dataType, enableHttp2, …). */
export type PassThrough = Record<string, unknown>

/**
 * One HTTP exchange through the platform. Resolves with any HTTP status;
 * rejects (WegateError NETWORK) only when there was no answer.
 */
export async function httpRequest (platform: Platform, opts: PassThrough & { url: string, method: string, header: Record<string, string> }): Promise<Response> {
  let res: any
  try {
    res = await callApi(platform, 'request', opts)
  } catch (err) {
    // Some H5 builds reject non-2xx answers with the response itself: still an answer.
    if (typeof err === 'object' && err !== null && typeof (err as { statusCode?: unknown }).statusCode === 'number') res = err
    else throw errorFromPlatform('request', err)
  }
  if (typeof res !== 'object' || res === null || typeof res.statusCode !== 'number') {
    throw errorFromPlatform('request', { errMsg: 'request:fail the platform answered without a statusCode' })
  }
  return { statusCode: res.statusCode, data: res.data, header: res.header ?? res.headers ?? {} }
}

/** A fresh login code from `wx.login` (never reused: WeChat codes are single-use). */
export async function loginCode (platform: Platform, timeout?: number): Promise<string> {
  let res: any
  try {
    res = await callApi(platform, 'login', timeout === undefined ? {} : { timeout })
  } catch (err) {
    throw errorFromPlatform('login', err)
  }
  const code = typeof res === 'object' && res !== null ? res.code : undefined
  if (typeof code !== 'string' || code === '') throw errorFromPlatform('login', { errMsg: 'login:fail no code in the answer' })
  return code
}

/** Open a socket: wx and uni return the task, Taro a promise of it. */
export function openSocket (platform: Platform, opts: Record<string, unknown>): Promise<SocketTask> {
  return new Promise((resolve, reject) => {
    const api = platform.connectSocket
    if (typeof api !== 'function') {
      reject(errorFromPlatform('connectSocket', { errMsg: 'connectSocket:fail the platform object has no connectSocket' }))
      return
    }
    let failed = false
    let returned: unknown
    try {
      returned = api.call(platform, {
        ...opts,
        success: () => {},
        fail: (err: unknown) => { failed = true; reject(errorFromPlatform('connectSocket', err)) }
      })
    } catch (err) {
      reject(errorFromPlatform('connectSocket', err))
      return
    }
    if (isThenable(returned)) returned.then((task) => resolve(task as SocketTask), (err) => reject(errorFromPlatform('connectSocket', err)))
    else if (typeof returned === 'object' && returned !== null) resolve(returned as SocketTask)
    else if (!failed) reject(errorFromPlatform('connectSocket', { errMsg: 'connectSocket:fail no SocketTask returned' }))
  })
}
