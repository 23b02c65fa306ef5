/**
 * What a client does, as plain functions over its parts (so that no closure
 * grows long): requests with the token and one renewal, the gateway's WeChat
 * endpoints, sockets and logout.
 */
import { post, type Auth, type AuthContext } from './auth'
import { Codes, envelopeOf, errorFromAnswer, WegateError } from './errors'
import { httpRequest, openSocket, type Response, type SocketTask } from './platform'
import type { Session } from './session'
import type { DecryptInput, LogoutResult, RequestOptions, SocketOptions } from './types'
import { resolve } from './url'

/** One client's parts. */
export interface Core {
  ctx: AuthContext
  auth: Auth
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

async function send (core: Core, url: string, o: RequestOptions, token: string | undefined): Promise<Response> {
  const { url: _u, header, auth: _a, success: _s, fail: _f, complete: _c, ...rest } = o
  const h = token === undefined ? { ...(header ?? {}) } : { ...withoutAuthorization(header), Authorization: `Bearer ${token}` }
  return await httpRequest(core.ctx.platform, { ...rest, url, method: (o.method ?? 'GET').toUpperCase(), header: h })
}

/** `client.request`: login when needed, the token, one renewal and one resend on a gateway token error. */
export async function request (core: Core, o: RequestOptions): Promise<Response> {
  const { auth } = core
  const target = resolve(core.ctx.base, o?.url)
  if (!target.ours || o.auth === false) return await send(core, target.url, o, undefined)
  const session = await auth.reporting(() => auth.ensure())
  const first = await send(core, target.url, o, session.accessToken)
  const code = tokenError(first)
  if (code === 0) return first
  const renewed = await auth.reporting(() => auth.renew(session.accessToken, code))
  return await send(core, target.url, o, renewed.accessToken) // once: whatever this answers is the caller's
}

/** POST to one of the gateway's WeChat endpoints with the token; the envelope's data, or a WegateError. */
export async function gatewayCall<T> (core: Core, path: string, body: unknown): Promise<T> {
  const res = await request(core, { url: path, method: 'POST', data: body, header: { 'content-type': 'application/json' }, dataType: 'json' })
  const env = envelopeOf(res.data)
  if (res.statusCode === 200 && env !== null && env.code === 200) return env.data as T
  throw errorFromAnswer(res.statusCode, res.data)
}

/** `client.decrypt`: with a fetcher, a stale or missing session_key → one new login, the data fetched again, once. */
export async function decrypt<T> (core: Core, input: DecryptInput | (() => DecryptInput | PromiseLike<DecryptInput>)): Promise<T> {
  if (typeof input !== 'function') return await gatewayCall<T>(core, '/auth/decrypt', decryptBody(input))
  try {
    return await gatewayCall<T>(core, '/auth/decrypt', decryptBody(await input()))
  } catch (err) {
    if (!(err instanceof WegateError) || !STALE_SESSION_KEY.includes(err.code)) throw err
  }
  await core.auth.reporting(() => core.auth.explicitLogin(true))
  return await gatewayCall<T>(core, '/auth/decrypt', decryptBody(await input()))
}

/** `client.connectSocket`: a due token is renewed first (a refused handshake shows no status to the mini program). */
export async function connectSocket (core: Core, o: SocketOptions): Promise<SocketTask> {
  const { auth, ctx } = core
  const target = resolve(ctx.base, o?.url, true)
  const { auth: useAuth, ...rest } = o
  if (!target.ours || useAuth === false) return await openSocket(ctx.platform, { ...rest, url: target.url })
  const session = await auth.reporting(() => auth.ensure())
  return await openSocket(ctx.platform, { ...rest, url: target.url, header: { ...withoutAuthorization(o.header), Authorization: `Bearer ${session.accessToken}` } })
}

/** `client.logout`: revoke at the gateway (refreshing an expired token once, never logging in), then forget. */
export async function logout (core: Core, o: { all?: boolean } = {}): Promise<LogoutResult> {
  const { auth, ctx } = core
  const inflight = auth.pending()
  if (inflight !== undefined) await inflight.catch(() => undefined)
  const s = ctx.store.load()
  if (s === null) return { revoked: false }
  const body = o.all === true ? { all: true } : {}
  let result: LogoutResult
  try {
    let res = await post(ctx, '/auth/logout', body, s.accessToken)
    if (tokenError(res) === Codes.TOKEN_EXPIRED) {
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
