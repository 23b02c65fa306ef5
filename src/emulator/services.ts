/**
 * The emulator's WeChat service APIs beyond login: `POST /cgi-bin/stable_token`
 * (the app's access_token, normal and forced modes), `POST
 * /wxa/business/getuserphonenumber` and `GET /wxa/checksession` — answering like
 * WeChat (HTTP 200, text/plain, errcode + errmsg with a rid) with deterministic
 * triggers for every errcode (docs/emulator.md). The clock is injectable so token
 * expiry can be tested without waiting.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'

/** The APIs `failNext` can make fail. */
export type EmulatedApi = 'stable_token' | 'getuserphonenumber' | 'checksession'

/** errmsg texts of the service APIs, as WeChat writes them (before `, rid: …`). */
export const SERVICE_ERRMSG: Readonly<Record<number, string>> = Object.freeze({
  40001: 'invalid credential, access_token is invalid or not latest',
  40014: 'invalid access_token',
  41001: 'access_token missing',
  42001: 'access_token expired',
  45009: 'reach max api daily quota limit',
  47001: 'data format error',
  87009: 'invalid signature'
})

export interface ServiceCounters {
  /** stable_token requests (any outcome). */
  readonly tokenCalls: number
  /** stable_token requests with force_refresh: true that issued a token. */
  readonly forcedRefreshes: number
  /** getuserphonenumber requests (any outcome). */
  readonly phoneCalls: number
  /** checksession requests (any outcome). */
  readonly checkCalls: number
}

export interface Services extends ServiceCounters {
  /** Answer a service API request; false when the path is not one of them. */
  handle (method: string, url: URL, body: string, reply: Reply): boolean
  /** code2Session issued `sessionKey` to (appid, openid): it replaces the user's previous one for checksession. */
  rememberSession (appid: string, openid: string, sessionKey: string): void
  /** Forget the user's session_key (checksession answers 87009), like WeChat after a session expires. */
  expireSession (appid: string, openid: string): void
  /** A forced refresh by someone else: a new token for the app, every older one answered 40001. Returns the new token. */
  rotateToken (appid: string): string
  /** The app's current access_token, if one was issued. */
  currentToken (appid: string): string | undefined
  /** The next `times` requests to `api` answer `errcode` (before any other check). */
  failNext (api: EmulatedApi, errcode: number, times?: number): void
}

/** Send an answer like WeChat: HTTP 200, text/plain, JSON. */
export type Reply = (body: Record<string, unknown>) => void
/** Send an error answer (errmsg from the tables, with a rid). */
type Fail = (errcode: number) => void

interface IssuedToken {
  appid: string
  expiresAt: number
  revoked: boolean
}

// WeChat renews a token in normal mode during its last 5 minutes (the old one lives to its end).
const RENEW_WINDOW_MS = 5 * 60_000
const ERR_TRIGGER = /^err(-?\d+)(?:-|$)/
const PHONE_TRIGGER = /^phone-(\d{5,15})(?:-|$)/

export function createServices (opts: {
  apps: ReadonlyMap<string, string>
  now: () => number
  /** Lifetime of an access_token in seconds (WeChat: 7200). */
  tokenTtlSec: number
  errmsg: (errcode: number) => string
  log?: (fields: object, msg: string) => void
}): Services {
  const { apps, now } = opts
  const tokens = new Map<string, IssuedToken>()
  const current = new Map<string, string>()
  const sessions = new Map<string, string>()
  const failures = new Map<EmulatedApi, Array<number>>()
  const spentPhoneCodes = new Set<string>()
  const busySeen = new Set<string>()
  let tokenCalls = 0
  let forcedRefreshes = 0
  let phoneCalls = 0
  let checkCalls = 0

  function issue (appid: string, revokeOthers: boolean): string {
    if (revokeOthers) for (const t of tokens.values()) if (t.appid === appid) t.revoked = true
    // Like WeChat's: opaque, ~130 characters.
    const token = `${Math.floor(now() / 1000)}_${randomBytes(60).toString('base64url')}`
    tokens.set(token, { appid, expiresAt: now() + opts.tokenTtlSec * 1000, revoked: false })
    current.set(appid, token)
    return token
  }

  function injected (api: EmulatedApi): number | undefined {
    const queue = failures.get(api)
    return queue === undefined || queue.length === 0 ? undefined : queue.shift()
  }

  function stableToken (body: string, reply: Reply, fail: Fail): void {
    tokenCalls++
    const inj = injected('stable_token')
    if (inj !== undefined) return fail(inj)
    const req = parseJson(body)
    if (req === undefined) return fail(47001)
    const appid = typeof req.appid === 'string' ? req.appid : ''
    const secret = apps.get(appid)
    if (secret === undefined) return fail(40013)
    if (req.secret !== secret) return fail(40125)
    if (req.grant_type !== 'client_credential') return fail(40002)
    const force = req.force_refresh === true
    let token = current.get(appid)
    const live = token === undefined ? undefined : tokens.get(token)
    if (force || live === undefined || live.revoked || live.expiresAt - now() <= RENEW_WINDOW_MS) {
      token = issue(appid, force)
      if (force) forcedRefreshes++
    }
    const expiresIn = Math.round((tokens.get(token!)!.expiresAt - now()) / 1000)
    opts.log?.({ appid, force, expiresIn }, 'stable_token ok')
    reply({ access_token: token, expires_in: expiresIn })
  }

  /** The app of a valid access_token, or the errcode WeChat answers for it. */
  function checkToken (token: string | null): { appid: string } | { errcode: number } {
    if (token === null || token === '') return { errcode: 41001 }
    const t = tokens.get(token)
    if (t === undefined || t.revoked) return { errcode: 40001 }
    if (t.expiresAt <= now()) return { errcode: 42001 }
    return { appid: t.appid }
  }

  function phoneNumber (url: URL, body: string, reply: Reply, fail: Fail): void {
    phoneCalls++
    const inj = injected('getuserphonenumber')
    if (inj !== undefined) return fail(inj)
    const auth = checkToken(url.searchParams.get('access_token'))
    if ('errcode' in auth) return fail(auth.errcode)
    const req = parseJson(body)
    const code = typeof req?.code === 'string' ? req.code : ''
    if (code === '') return fail(47001)
    const key = auth.appid + '\0' + code
    if (spentPhoneCodes.has(key)) return fail(40029)
    const triggered = triggeredErrcode(code, key, busySeen)
    if (triggered !== undefined) return fail(triggered)
    spentPhoneCodes.add(key)
    const pure = PHONE_TRIGGER.exec(code)?.[1] ?? numberFor(code)
    const appid = code.startsWith('otherapp-') ? 'wx00000000otherapp' : auth.appid
    opts.log?.({ appid: auth.appid }, 'getuserphonenumber ok')
    reply({
      errcode: 0,
      errmsg: 'ok',
      // countryCode as a number, like the example on WeChat's page (its field table says string).
      phone_info: { phoneNumber: pure, purePhoneNumber: pure, countryCode: 86, watermark: { timestamp: Math.floor(now() / 1000), appid } }
    })
  }

  function checkSession (url: URL, reply: Reply, fail: Fail): void {
    checkCalls++
    const inj = injected('checksession')
    if (inj !== undefined) return fail(inj)
    const q = url.searchParams
    const auth = checkToken(q.get('access_token'))
    if ('errcode' in auth) return fail(auth.errcode)
    if (q.get('sig_method') !== 'hmac_sha256') return fail(87009)
    const key = sessions.get(auth.appid + '\0' + (q.get('openid') ?? ''))
    if (key === undefined || q.get('signature') !== createHmac('sha256', key).update('').digest('hex')) return fail(87009)
    reply({ errcode: 0, errmsg: 'ok' })
  }

  return {
    handle (method, url, body, reply) {
      const fail: Fail = (errcode) => reply({ errcode, errmsg: `${opts.errmsg(errcode)}, rid: ${newRid(now())}` })
      if (url.pathname === '/cgi-bin/stable_token' && method === 'POST') stableToken(body, reply, fail)
      else if (url.pathname === '/wxa/business/getuserphonenumber' && method === 'POST') phoneNumber(url, body, reply, fail)
      else if (url.pathname === '/wxa/checksession' && method === 'GET') checkSession(url, reply, fail)
      else return false
      return true
    },
    rememberSession (appid, openid, sessionKey) {
      sessions.set(appid + '\0' + openid, sessionKey)
    },
    expireSession (appid, openid) {
      sessions.delete(appid + '\0' + openid)
    },
    rotateToken (appid) {
      return issue(appid, true)
    },
    currentToken (appid) {
      return current.get(appid)
    },
    failNext (api, errcode, times = 1) {
      const queue = failures.get(api) ?? []
      for (let i = 0; i < times; i++) queue.push(errcode)
      failures.set(api, queue)
    },
    get tokenCalls () { return tokenCalls },
    get forcedRefreshes () { return forcedRefreshes },
    get phoneCalls () { return phoneCalls },
    get checkCalls () { return checkCalls }
  }
}

function parseJson (text: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(text)
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? v as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}

/** A mainland mobile number (11 digits, starting 13) stable for the same code. */
function numberFor (code: string): string {
  const n = createHash('sha256').update(code).digest().readUInt32BE(0) % 1_000_000_000
  return '13' + String(n).padStart(9, '0')
}

/** A WeChat-style request id: hex seconds, then two random hex groups. */
export function newRid (nowMs: number = Date.now()): string {
  const seconds = Math.floor(nowMs / 1000).toString(16).padStart(8, '0')
  return `${seconds}-${randomBytes(4).toString('hex')}-${randomBytes(4).toString('hex')}`
}

/**
 * The errcode a code's trigger asks for (docs/emulator.md): `err<errcode>[-…]` every time,
 * `busyonce-<id>` -1 the first time `key` is seen (remembered in `busySeen`); undefined otherwise.
 */
export function triggeredErrcode (code: string, key: string, busySeen: Set<string>): number | undefined {
  const err = ERR_TRIGGER.exec(code)
  if (err !== null) return Number(err[1])
  if (code.startsWith('busyonce-') && !busySeen.has(key)) {
    busySeen.add(key)
    return -1
  }
  return undefined
}
