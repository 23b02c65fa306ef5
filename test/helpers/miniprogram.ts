/**
 * Mini-program platforms in Node for the client library's tests: a `wx` whose
 * request does real HTTP (undici), whose login hands out codes the WeChat
 * emulator accepts (`u-<user>-<n>`), whose storage is a Map that outlives a
 * "relaunch", and whose connectSocket is a real `ws` socket. Taro- and
 * uni-shaped variants are built on it the way those frameworks wrap the same
 * APIs. Every request is recorded (URL and headers) for assertions.
 */
import { request as undiciRequest } from 'undici'
import WebSocket from 'ws'

type Callbacks = { success?: (res: any) => void, fail?: (err: any) => void, complete?: (res: any) => void } & Record<string, any>

export interface Sent {
  url: string
  method: string
  header: Record<string, string>
}

export interface WxShim {
  request: (opts: Callbacks) => { abort: () => void }
  login: (opts?: Callbacks) => void
  getStorageSync: (key: string) => unknown
  setStorageSync: (key: string, value: unknown) => void
  removeStorageSync: (key: string) => void
  connectSocket: (opts: Callbacks) => SocketTask
  /** Every request sent, in order. */
  sent: Sent[]
  /** Every login code handed out, in order. */
  codes: string[]
  /** Codes to hand out before the generated ones (e.g. a trigger such as `err40163-a`). */
  queue: string[]
  /** Paths whose next answer is lost: the server gets the request, the caller a `fail` (once per entry). */
  lose: string[]
  /** Paths whose next request fails before reaching the server (offline; once per entry). */
  unreachable: string[]
  storage: Map<string, string>
}

export interface SocketTask {
  send: (o: { data: string | ArrayBuffer, success?: () => void, fail?: (e: unknown) => void }) => void
  close: (o?: { code?: number, reason?: string }) => void
  onOpen: (cb: (res: { header: Record<string, string> }) => void) => void
  onMessage: (cb: (res: { data: string | ArrayBuffer }) => void) => void
  onClose: (cb: (res: { code: number, reason: string }) => void) => void
  onError: (cb: (err: { errMsg: string }) => void) => void
}

function later (fn: (() => void) | undefined): void {
  if (fn !== undefined) setImmediate(fn)
}

function queryString (data: Record<string, unknown>): string {
  return Object.entries(data).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(typeof v === 'object' ? JSON.stringify(v) : String(v))}`).join('&')
}

/** wx.request's body rules: GET data → query string; JSON objects stringified unless form-encoded. */
function encode (method: string, url: string, data: unknown, contentType: string): { url: string, body: string | Buffer | undefined } {
  if (data === undefined || data === null) return { url, body: undefined }
  if (method === 'GET') {
    const q = typeof data === 'string' ? data : queryString(data as Record<string, unknown>)
    return { url: q === '' ? url : url + (url.includes('?') ? '&' : '?') + q, body: undefined }
  }
  if (typeof data === 'string') return { url, body: data }
  if (data instanceof ArrayBuffer) return { url, body: Buffer.from(data) }
  if (contentType.includes('application/x-www-form-urlencoded')) return { url, body: queryString(data as Record<string, unknown>) }
  return { url, body: JSON.stringify(data) }
}

/** The native `wx` shape: callbacks only; request returns a RequestTask. */
export function createWx (user: string, storage = new Map<string, string>()): WxShim {
  let n = 0
  const sent: Sent[] = []
  const codes: string[] = []
  const queue: string[] = []
  const lose: string[] = []
  const unreachable: string[] = []
  const shim: WxShim = {
    sent,
    codes,
    queue,
    lose,
    unreachable,
    storage,
    request (opts) {
      const method = String(opts.method ?? 'GET').toUpperCase()
      const header: Record<string, string> = { ...(opts.header ?? {}) }
      if (!Object.keys(header).some((k) => k.toLowerCase() === 'content-type')) header['content-type'] = 'application/json'
      const ct = Object.entries(header).find(([k]) => k.toLowerCase() === 'content-type')?.[1] ?? ''
      const { url, body } = encode(method, String(opts.url), opts.data, ct)
      sent.push({ url, method, header })
      const down = unreachable.indexOf(new URL(url).pathname)
      if (down !== -1) {
        unreachable.splice(down, 1)
        const e = { errMsg: 'request:fail net::ERR_INTERNET_DISCONNECTED' }
        later(() => { opts.fail?.(e); opts.complete?.(e) })
        return { abort: () => {} }
      }
      const ac = new AbortController()
      undiciRequest(url, { method: method as 'GET', headers: header, body, signal: ac.signal }).then(async (res) => {
        const text = await res.body.text()
        let data: unknown = text
        if ((opts.dataType ?? 'json') === 'json') { try { data = JSON.parse(text) } catch {} }
        const h: Record<string, string> = {}
        for (const [k, v] of Object.entries(res.headers)) h[k] = Array.isArray(v) ? v.join(', ') : String(v)
        const answer = { statusCode: res.statusCode, data, header: h, cookies: [], errMsg: 'request:ok' }
        const lost = lose.indexOf(new URL(url).pathname)
        if (lost !== -1) {
          lose.splice(lost, 1)
          const e = { errMsg: 'request:fail the answer was lost' }
          later(() => { opts.fail?.(e); opts.complete?.(e) })
          return
        }
        later(() => { opts.success?.(answer); opts.complete?.(answer) })
      }, (err: Error) => {
        const e = { errMsg: `request:fail ${err.message}` }
        later(() => { opts.fail?.(e); opts.complete?.(e) })
      })
      return { abort: () => ac.abort() }
    },
    login (opts = {}) {
      const code = queue.shift() ?? `u-${user}-${++n}`
      codes.push(code)
      const res = { code, errMsg: 'login:ok' }
      later(() => { opts.success?.(res); opts.complete?.(res) })
    },
    getStorageSync: (key) => storage.has(key) ? JSON.parse(storage.get(key) as string) : '',
    setStorageSync: (key, value) => { storage.set(key, JSON.stringify(value)) },
    removeStorageSync: (key) => { storage.delete(key) },
    connectSocket (opts) {
      const ws = new WebSocket(String(opts.url), opts.protocols ?? [], { headers: opts.header ?? {} })
      ws.binaryType = 'arraybuffer'
      later(() => opts.success?.({ errMsg: 'connectSocket:ok' }))
      return {
        send: (o) => ws.send(o.data, (err) => { if (err === undefined || err === null) o.success?.(); else o.fail?.(err) }),
        close: (o = {}) => ws.close(o.code ?? 1000, o.reason),
        onOpen: (cb) => ws.on('open', () => cb({ header: {} })),
        onMessage: (cb) => ws.on('message', (d, isBinary) => cb({ data: isBinary ? (d as ArrayBuffer) : Buffer.from(d as ArrayBuffer).toString('utf8') })),
        onClose: (cb) => ws.on('close', (code, reason) => cb({ code, reason: reason.toString() })),
        onError: (cb) => ws.on('error', (err) => cb({ errMsg: err.message }))
      }
    }
  }
  return shim
}

type Fn = (opts: Callbacks) => unknown

/** Taro: every async API returns a promise and also calls the callbacks; connectSocket resolves to the task. */
export function taroFrom (wx: WxShim): Record<string, unknown> {
  const promised = (fn: Fn) => (opts: Callbacks = {}) => new Promise((resolve, reject) => {
    fn({ ...opts, success: (r: unknown) => { opts.success?.(r); resolve(r) }, fail: (e: unknown) => { opts.fail?.(e); reject(e) } })
  })
  return {
    request: promised(wx.request),
    login: promised(wx.login),
    getStorageSync: wx.getStorageSync,
    setStorageSync: wx.setStorageSync,
    removeStorageSync: wx.removeStorageSync,
    connectSocket: async (opts: Callbacks) => await Promise.resolve(wx.connectSocket(opts))
  }
}

/**
 * uni-app: with a success/fail/complete callback an API behaves like wx (returns
 * its task); without one it returns a promise — of the result (Vue 3), or of
 * `[err, res]` (Vue 2). `callbacksIgnored`: a promisified wrapper that only
 * answers through that promise, as apps build over uni on Vue 2.
 */
export function uniFrom (wx: WxShim, opts: { vue2?: boolean, callbacksIgnored?: boolean } = {}): Record<string, unknown> {
  const api = (fn: Fn) => (o: Callbacks = {}) => {
    const hasCallback = !(opts.callbacksIgnored ?? false) && (o.success !== undefined || o.fail !== undefined || o.complete !== undefined)
    if (hasCallback) return fn(o)
    const { success: _s, fail: _f, complete: _c, ...rest } = o
    return new Promise((resolve, reject) => {
      fn({
        ...rest,
        success: (r: unknown) => resolve(opts.vue2 === true ? [null, r] : r),
        fail: (e: unknown) => { if (opts.vue2 === true) resolve([e, undefined]); else reject(e) }
      })
    })
  }
  return {
    request: api(wx.request),
    login: api(wx.login),
    getStorageSync: wx.getStorageSync,
    setStorageSync: wx.setStorageSync,
    removeStorageSync: wx.removeStorageSync,
    connectSocket: (o: Callbacks) => wx.connectSocket(o)
  }
}
