/**
 * createClient: checks the options once and assembles a client from its parts
 * (auth.ts: the session operations; calls.ts: what each method does).
 */
import { Auth, type AuthContext, type Events } from './auth'
import { connectSocket, decrypt, gatewayCall, logout, request, type Core } from './calls'
import type { Platform } from './platform'
import { SessionStore } from './session'
import type { ClientOptions, PhoneNumber, WegateClient } from './types'
import { parseBase } from './url'

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
  const key = opts.storageKey ?? 'wegate.session'
  const listeners = hooks(opts)
  const ctx: AuthContext = {
    platform,
    base: parseBase(opts.baseUrl),
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
  const core: Core = { ctx, auth: new Auth(ctx, key) }
  const listen = <K extends keyof Events>(name: K) => (fn: Events[K]): () => void => {
    listeners[name].push(fn)
    return () => {
      const i = listeners[name].indexOf(fn)
      if (i !== -1) listeners[name].splice(i, 1)
    }
  }
  return {
    login: async (o = {}) => await core.auth.reporting(() => core.auth.explicitLogin(o.force === true)),
    request: (async (o) => await request(core, o)) as WegateClient['request'],
    getPhoneNumber: async (code) => {
      if (typeof code !== 'string' || code === '') throw new TypeError('wegate-miniprogram: getPhoneNumber needs e.detail.code from the button (empty: the user declined)')
      return await gatewayCall<PhoneNumber>(core, '/auth/phone', { code })
    },
    decrypt: async (input) => await decrypt(core, input),
    connectSocket: async (o) => await connectSocket(core, o),
    logout: async (o) => await logout(core, o),
    session: () => ctx.store.load(),
    onLogin: listen('login'),
    onLogout: listen('logout'),
    onAuthError: listen('authError')
  }
}
