/**
 * wegate-miniprogram: the mini-program half of wegate. Logs in with wx.login,
 * keeps the tokens in storage, refreshes once for all concurrent callers, logs
 * in again when the session is over, and never sends the token to another host.
 * Works with the native `wx`, Taro and uni-app: pass the platform object as `wx`.
 */
export { createClient } from './client'
export type { ClientOptions, DecryptInput, LogoutResult, PhoneNumber, RequestOptions, SocketOptions, WegateClient } from './types'
export type { LogoutEvent, LogoutReason, SessionInfo } from './auth'
export { Codes, WegateError } from './errors'
export type { Envelope } from './errors'
export type { Platform, Response, SocketTask } from './platform'
