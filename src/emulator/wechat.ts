/**
 * A local stand-in for WeChat's server API, for development and tests. It answers
 * `GET /sns/jscode2session` the way WeChat does — HTTP 200 and `text/plain` even
 * for errors, the request id inside `errmsg`, single-use codes — and lets a caller
 * trigger every failure deterministically through the code itself (docs/emulator.md).
 * The service APIs (stable_token, getuserphonenumber, checksession) are in services.ts.
 * The gateway never depends on it at runtime.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { DEMO_WECHAT_SECRET } from '../config/demo.js'
import { createOAuth } from './oauth.js'
import { createServices, newRid, SERVICE_ERRMSG, type EmulatedApi } from './services.js'

export type { EmulatedApi } from './services.js'

export interface WeChatEmulatorApp {
  appId: string
  secret: string
  /**
   * The WeChat Open Platform account the app is bound to: a user's unionid is the same in
   * every app of one account (default: every app shares one account).
   */
  openAccount?: string
}

/** The subset of a pino logger the emulator uses. */
export interface EmulatorLogger {
  info (obj: object, msg: string): void
}

export interface WeChatEmulatorOptions {
  /** Mini programs the emulator knows; default: the demo app of the repository's gateway.yaml. */
  apps?: WeChatEmulatorApp[]
  /** One info line per request (never the secret); false or absent: silent. */
  logger?: false | EmulatorLogger
  /** Clock for access_token lifetimes and watermarks, epoch ms; default Date.now. */
  now?: () => number
  /** Lifetime of an access_token, seconds; default 7200 like WeChat. */
  tokenTtlSec?: number
}

export interface WeChatEmulator {
  /** Start listening (default 127.0.0.1 on a free port); resolves to the base URL, e.g. `http://127.0.0.1:9400`. */
  listen (opts?: { port?: number, host?: string }): Promise<string>
  /** Stop listening, drop open connections and pending slow answers. */
  close (): Promise<void>
  /** How many sns/oauth2/access_token requests arrived (any outcome). */
  readonly oauthCalls: number
  /** How many code2Session requests arrived (any outcome). */
  readonly calls: number
  /** The `js_code` of every code2Session request, in arrival order (`''` when absent). */
  readonly codes: readonly string[]
  /** stable_token requests received (any outcome). */
  readonly tokenCalls: number
  /** stable_token requests with force_refresh: true that issued a new token. */
  readonly forcedRefreshes: number
  /** getuserphonenumber requests received (any outcome). */
  readonly phoneCalls: number
  /** checksession requests received (any outcome). */
  readonly checkCalls: number
  /** Someone else forced a refresh: the app gets a new access_token and every older one is answered 40001. */
  rotateToken (appId: string): string
  /** The app's current access_token, if one was issued. */
  currentToken (appId: string): string | undefined
  /** The next `times` (default 1) requests to `api` answer `errcode`, before any other check. */
  failNext (api: EmulatedApi, errcode: number, times?: number): void
  /** WeChat forgot the user's session_key: checksession answers 87009. */
  expireSession (appId: string, openid: string): void
}

/** The app used when none is configured; matches the repository's gateway.yaml. */
export const DEMO_APP: Readonly<WeChatEmulatorApp> = Object.freeze({ appId: 'wx00000000000demo0', secret: DEMO_WECHAT_SECRET })

/** errmsg texts as WeChat sends them (before `, rid: …`). */
export const WECHAT_ERRMSG: Readonly<Record<number, string>> = Object.freeze({
  [-1]: 'system error',
  40002: 'invalid grant_type',
  40013: 'invalid appid',
  40029: 'invalid code',
  40125: 'invalid appsecret',
  40163: 'code been used',
  40226: 'high risk user',
  41008: 'missing code',
  45011: 'api minute-quota reach limit  mustslower  retry next minute',
  ...SERVICE_ERRMSG
})

// WeChat's codes are 32 chars; anything far longer is not a code at all.
const MAX_CODE_LENGTH = 128
// 60 s: long enough for any client timeout test, short enough not to hang a suite.
const MAX_SLOW_MS = 60_000

const ERR_TRIGGER = /^err(-?\d+)(?:-|$)/
const SLOW_TRIGGER = /^slow(\d+)-/
const USER_TRIGGER = /^u-([^-]+)(?:-|$)/
// key-<22 base64url chars>[-u-<name>]: hand out that session_key (16 bytes), e.g. WeChat's official decrypt sample's.
const KEY_TRIGGER = /^key-([A-Za-z0-9_-]{22})(?:-u-([^-]+))?(?:-|$)/
// A service API's JSON body is tiny; 64 KiB stops a runaway one.
const MAX_BODY_BYTES = 64 * 1024

const HTML_502 = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n'
const NOT_FOUND = JSON.stringify({ errcode: -1, errmsg: 'not found' })

/** Create an emulator; nothing listens until `listen()`. */
export function createWeChatEmulator (opts: WeChatEmulatorOptions = {}): WeChatEmulator {
  const apps = new Map<string, string>()
  const accounts = new Map<string, string>()
  for (const app of opts.apps ?? [DEMO_APP]) {
    apps.set(app.appId, app.secret)
    if (app.openAccount !== undefined) accounts.set(app.appId, app.openAccount)
  }
  /** The same user has one unionid across the apps of an open platform account. */
  const unionidOf = (appid: string, user: string): string => {
    const account = accounts.get(appid)
    return account === undefined ? stableId('unionid', user) : stableId('unionid', account, user)
  }
  const log = opts.logger === false ? undefined : opts.logger
  const now = opts.now ?? Date.now
  const services = createServices({
    apps,
    now,
    tokenTtlSec: opts.tokenTtlSec ?? 7200,
    errmsg: (errcode) => WECHAT_ERRMSG[errcode] ?? `errcode ${errcode}`,
    log: log === undefined ? undefined : (fields, msg) => log.info(fields, msg)
  })

  const oauth = createOAuth({
    apps,
    openidOf: (appid, user, code) => stableId('openid', appid, user === undefined ? 'code:' + code : 'user:' + user),
    unionidOf,
    log: log === undefined ? undefined : (fields, msg) => log.info(fields, msg)
  })

  // `${appid}\0${code}` of codes that already succeeded (WeChat codes work once).
  const spent = new Set<string>()
  // busyonce codes that already got their -1.
  const busySeen = new Set<string>()
  const received: string[] = []
  const pending = new Set<NodeJS.Timeout>()
  let server: Server | undefined

  function send (req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string): void {
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  function fail (req: IncomingMessage, res: ServerResponse, appid: string, errcode: number, api = 'code2Session'): void {
    const errmsg = `${WECHAT_ERRMSG[errcode] ?? `errcode ${errcode}`}, rid: ${newRid(now())}`
    log?.info({ appid, errcode }, `${api} failed`)
    send(req, res, 200, 'text/plain', JSON.stringify({ errcode, errmsg }))
  }

  function succeed (req: IncomingMessage, res: ServerResponse, appid: string, code: string): void {
    spent.add(appid + '\0' + code)
    const chosen = KEY_TRIGGER.exec(code)
    const user = USER_TRIGGER.exec(code)?.[1] ?? chosen?.[2]
    const body: { session_key: string, openid: string, unionid?: string } = {
      session_key: chosen === null ? randomBytes(16).toString('base64') : Buffer.from(chosen[1]!, 'base64url').toString('base64'),
      openid: stableId('openid', appid, user === undefined ? 'code:' + code : 'user:' + user)
    }
    if (user !== undefined) body.unionid = unionidOf(appid, user)
    services.rememberSession(appid, body.openid, body.session_key)
    log?.info({ appid, unionid: body.unionid !== undefined }, 'code2Session ok')
    send(req, res, 200, 'text/plain', JSON.stringify(body))
  }

  function code2Session (req: IncomingMessage, res: ServerResponse, query: URLSearchParams): void {
    const appid = query.get('appid') ?? ''
    const code = query.get('js_code') ?? ''
    received.push(code)

    const secret = apps.get(appid)
    if (secret === undefined) return fail(req, res, appid, 40013)
    if (query.get('secret') !== secret) return fail(req, res, appid, 40125)
    if (code === '') return fail(req, res, appid, 41008)
    if (query.get('grant_type') !== 'authorization_code') return fail(req, res, appid, 40002)
    if (code.length > MAX_CODE_LENGTH) return fail(req, res, appid, 40029)
    const key = appid + '\0' + code
    if (spent.has(key)) return fail(req, res, appid, 40163)

    const err = ERR_TRIGGER.exec(code)
    if (err !== null) return fail(req, res, appid, Number(err[1]))
    if (code.startsWith('busyonce-') && !busySeen.has(key)) {
      busySeen.add(key)
      return fail(req, res, appid, -1)
    }
    if (code.startsWith('html-')) {
      log?.info({ appid, status: 502 }, 'code2Session answered with HTML')
      return send(req, res, 502, 'text/html', HTML_502)
    }
    if (code.startsWith('empty-')) {
      log?.info({ appid }, 'code2Session answered with an empty body')
      return send(req, res, 200, 'text/plain', '')
    }
    const slow = SLOW_TRIGGER.exec(code)
    if (slow !== null) {
      const ms = Math.min(Number(slow[1]), MAX_SLOW_MS)
      const timer = setTimeout(() => {
        pending.delete(timer)
        succeed(req, res, appid, code)
      }, ms)
      pending.add(timer)
      // A client that gave up does not consume the code (it never saw the answer).
      res.on('close', () => {
        if (pending.delete(timer)) clearTimeout(timer)
      })
      return
    }
    succeed(req, res, appid, code)
  }

  function handle (req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://emulator')
    if (url.pathname === '/sns/jscode2session' && (req.method === 'GET' || req.method === 'HEAD')) {
      code2Session(req, res, url.searchParams)
      return
    }
    const reply = (answer: Record<string, unknown>) => send(req, res, 200, 'text/plain', JSON.stringify(answer))
    if (req.method === 'GET' || req.method === 'HEAD') {
      const handled = oauth.handle(url, reply, (errcode) => fail(req, res, url.searchParams.get('appid') ?? '', errcode, 'oauth2 access_token'),
        (status, type, body, headers) => {
          res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers })
          res.end(req.method === 'HEAD' ? undefined : body)
        })
      if (handled) return
    }
    readBody(req).then((body) => {
      if (!services.handle(req.method ?? 'GET', url, body, reply)) send(req, res, 404, 'text/plain', NOT_FOUND)
    }, () => res.destroy())
  }

  return {
    async listen ({ port = 0, host = '127.0.0.1' } = {}) {
      if (server !== undefined) throw new Error('WeChat emulator is already listening')
      const s = createServer(handle)
      server = s
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject)
        s.listen(port, host, () => {
          s.off('error', reject)
          resolve()
        })
      })
      const addr = s.address() as AddressInfo
      return `http://${urlHost(addr.address)}:${addr.port}`
    },
    async close () {
      for (const timer of pending) clearTimeout(timer)
      pending.clear()
      const s = server
      server = undefined
      if (s === undefined) return
      s.closeAllConnections()
      await new Promise<void>((resolve) => s.close(() => resolve()))
    },
    get oauthCalls () { return oauth.exchanges },
    get calls () {
      return received.length
    },
    get codes () {
      return received.slice()
    },
    get tokenCalls () { return services.tokenCalls },
    get forcedRefreshes () { return services.forcedRefreshes },
    get phoneCalls () { return services.phoneCalls },
    get checkCalls () { return services.checkCalls },
    rotateToken: (appId) => services.rotateToken(appId),
    currentToken: (appId) => services.currentToken(appId),
    failNext: (api, errcode, times) => services.failNext(api, errcode, times),
    expireSession: (appId, openid) => services.expireSession(appId, openid)
  }
}

/** The request body as text (at most 64 KiB; more is refused). */
async function readBody (req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) throw new Error('body too large')
    chunks.push(chunk as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** A 28-char id like WeChat's (`o` + 27 base64url chars), stable for the same inputs across runs. */
function stableId (...parts: string[]): string {
  return 'o' + createHash('sha256').update(parts.join('\0')).digest('base64url').slice(0, 27)
}

function urlHost (address: string): string {
  // A wildcard bind is reachable on loopback; give callers a URL they can use.
  if (address === '0.0.0.0' || address === '::') return '127.0.0.1'
  return address.includes(':') ? `[${address}]` : address
}
