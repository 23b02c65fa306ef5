/**
 * The emulator's WeChat web and App login: the authorization pages a browser is
 * sent to (`/connect/oauth2/authorize` for an official account's H5 page,
 * `/connect/qrconnect` for a website's QR login) and the code exchange both they
 * and the App SDK end in (`GET /sns/oauth2/access_token`), answered like WeChat:
 * HTTP 200, text/plain, errcode + errmsg with a rid. A page, given `user=<name>`,
 * sends the browser back with a code for that test user (`refuse=1`: without a
 * code, as when the user declines); with neither it shows a page of links.
 * Triggers and users: docs/emulator.md.
 */
import { createHash, randomBytes } from 'node:crypto'
import { triggeredErrcode } from './services.js'

/** Send an answer like WeChat: HTTP 200, text/plain, JSON. */
type Reply = (body: Record<string, unknown>) => void
type Fail = (errcode: number) => void
type Send = (status: number, type: string, body: string, headers?: Record<string, string>) => void

export interface OAuthDeps {
  /** appId → secret. */
  apps: ReadonlyMap<string, string>
  /** The user's openid in an app (`user` undefined: a code that names no test user). */
  openidOf (appid: string, user: string | undefined, code: string): string
  /** The user's unionid, the same in every app of the user's open platform account. */
  unionidOf (appid: string, user: string): string
  log?: ((fields: object, msg: string) => void) | undefined
}

export interface OAuth {
  /** Answer a login page or the code exchange; false when the path is neither. */
  handle (url: URL, reply: Reply, fail: Fail, send: Send): boolean
  /** sns/oauth2/access_token requests received (any outcome). */
  readonly exchanges: number
}

// WeChat's codes are 32 chars; anything far longer is not a code at all.
const MAX_CODE_LENGTH = 128
const USER_TRIGGER = /^u-([^-]+)(?:-|$)/
const USER_NAME = /^[A-Za-z0-9_]{1,32}$/
/** The test users the page offers (any name matching USER_NAME works with `user=`). */
const PAGE_USERS = ['alice', 'bob', 'carol']
/** Which scopes each page accepts. */
const PAGES: Readonly<Record<string, readonly string[]>> = {
  '/connect/oauth2/authorize': ['snsapi_base', 'snsapi_userinfo'],
  '/connect/qrconnect': ['snsapi_login']
}

export function createOAuth (deps: OAuthDeps): OAuth {
  const spent = new Set<string>()
  const busySeen = new Set<string>()
  // Scope granted with each code a page issued.
  const scopes = new Map<string, string>()
  let exchanges = 0

  /** A login page: back to redirect_uri with a code (or none: refused), or a page of choices. */
  function page (url: URL, send: Send): void {
    const q = url.searchParams
    const appid = q.get('appid') ?? ''
    const scope = q.get('scope') ?? ''
    const state = q.get('state') ?? ''
    const text = (status: number, msg: string) => send(status, 'text/plain; charset=utf-8', msg + '\n')
    if (!deps.apps.has(appid)) return text(400, 'appid 参数错误 (invalid appid)')
    if (!PAGES[url.pathname]!.includes(scope)) return text(400, `scope 参数错误 (${url.pathname} takes ${PAGES[url.pathname]!.join(' or ')})`)
    if (q.get('response_type') !== 'code') return text(400, 'response_type must be code')
    let back: URL
    try {
      back = new URL(q.get('redirect_uri') ?? '')
    } catch {
      return text(400, 'redirect_uri 参数错误 (not an absolute URL)')
    }
    const user = q.get('user')
    if (q.get('refuse') === '1') {
      deps.log?.({ appid }, 'oauth2 page: the user refused')
      back.searchParams.set('state', state)
      return send(302, 'text/plain', '', { Location: back.href })
    }
    if (user === null) return send(200, 'text/html; charset=utf-8', choices(url))
    if (!USER_NAME.test(user)) return text(400, 'user must be 1-32 letters, digits or _')
    // Deterministic for (app, user, state): the same flow gets the same code.
    const code = `u-${user}-${createHash('sha256').update(`${appid}\0${user}\0${state}`).digest('hex').slice(0, 16)}`
    scopes.set(code, scope)
    deps.log?.({ appid, scope }, 'oauth2 page: code issued')
    back.searchParams.set('code', code)
    back.searchParams.set('state', state)
    send(302, 'text/plain', '', { Location: back.href })
  }

  /** GET /sns/oauth2/access_token: a page's (or the App SDK's) code for the user's openid, unionid and tokens. */
  function exchange (q: URLSearchParams, reply: Reply, fail: Fail): void {
    exchanges++
    const appid = q.get('appid') ?? ''
    const code = q.get('code') ?? ''
    const secret = deps.apps.get(appid)
    if (secret === undefined) return fail(40013)
    if (q.get('secret') !== secret) return fail(40125)
    if (code === '') return fail(41008)
    if (q.get('grant_type') !== 'authorization_code') return fail(40002)
    if (code.length > MAX_CODE_LENGTH) return fail(40029)
    const key = appid + '\0' + code
    if (spent.has(key)) return fail(40163)
    const triggered = triggeredErrcode(code, key, busySeen)
    if (triggered !== undefined) return fail(triggered)
    spent.add(key)
    const user = USER_TRIGGER.exec(code)?.[1]
    const body: Record<string, unknown> = {
      access_token: randomBytes(24).toString('base64url'),
      expires_in: 7200,
      refresh_token: randomBytes(24).toString('base64url'),
      openid: deps.openidOf(appid, user, code),
      scope: scopes.get(code) ?? 'snsapi_userinfo'
    }
    if (user !== undefined) body.unionid = deps.unionidOf(appid, user)
    deps.log?.({ appid, unionid: user !== undefined }, 'oauth2 access_token ok')
    reply(body)
  }

  return {
    handle (url, reply, fail, send) {
      if (url.pathname === '/sns/oauth2/access_token') {
        exchange(url.searchParams, reply, fail)
        return true
      }
      if (PAGES[url.pathname] !== undefined) {
        page(url, send)
        return true
      }
      return false
    },
    get exchanges () { return exchanges }
  }
}

/** The emulator's consent page: one link per test user, and one to refuse. */
function choices (url: URL): string {
  const link = (extra: string, label: string) => {
    const u = new URL(url.href)
    const [k, v] = extra.split('=')
    u.searchParams.set(k!, v!)
    return `<li><a href="${escapeHtml(u.pathname + u.search)}">${label}</a></li>`
  }
  return '<!doctype html><meta charset="utf-8"><title>WeChat emulator: authorize</title>' +
    `<h1>Log in to ${escapeHtml(url.searchParams.get('appid') ?? '')} as</h1><ul>` +
    PAGE_USERS.map((u) => link(`user=${u}`, u)).join('') + link('refuse=1', 'refuse (no code)') + '</ul>\n'
}

function escapeHtml (s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
