/**
 * End-to-end plumbing for the /auth tests: the WeChat emulator behind a
 * recording pass-through (so a test knows every session_key WeChat handed out
 * and can prove none of them leaks), an echo upstream that reports the headers
 * it received, a throw-away Redis, and small HTTP helpers.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TokenPair } from '../../src/auth/sessions.js'
import { createWeChatEmulator, type WeChatEmulator, type WeChatEmulatorApp } from '../../src/emulator/wechat.js'
import { startGateway, type StartedGateway, type TestContext } from './gateway.js'
import { startRedis, type TestRedis } from './redis.js'

export const APP_A = { appId: 'wx00000000000demo0', secret: 'demo-secret' }
export const APP_B = { appId: 'wx0000000000second', secret: 'second-secret' }

/** The emulator plus what passed through the recorder in front of it. */
export interface RecordedWeChat {
  emulator: WeChatEmulator
  /** The base URL to give the gateway (the recorder, not the emulator). */
  url: string
  /** Every session_key WeChat (the emulator) answered with. */
  sessionKeys: string[]
}

async function listen (server: ReturnType<typeof createServer>): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function closeServer (server: ReturnType<typeof createServer>): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

/**
 * Start the emulator behind a recording pass-through. The session_key is a
 * random value the gateway is never supposed to show; the recorder reads the
 * emulator's answers on the wire, so tests can search responses and logs for it.
 */
export async function startWeChat (t: TestContext, apps: WeChatEmulatorApp[] = [APP_A]): Promise<RecordedWeChat> {
  const emulator = createWeChatEmulator({ apps })
  const emuUrl = await emulator.listen({ port: 0 })
  const sessionKeys: string[] = []
  const recorder = createServer((req, res) => {
    const ac = new AbortController()
    res.on('close', () => ac.abort()) // the gateway gave up (timeout): give up on the emulator too
    fetch(emuUrl + (req.url ?? '/'), { method: req.method, signal: ac.signal }).then(async (up) => {
      const body = await up.text()
      try {
        const parsed = JSON.parse(body) as { session_key?: unknown }
        if (typeof parsed.session_key === 'string') sessionKeys.push(parsed.session_key)
      } catch {}
      res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'text/plain' })
      res.end(body)
    }).catch(() => { res.destroy() })
  })
  const url = await listen(recorder)
  t.teardown(async () => {
    await closeServer(recorder)
    await emulator.close()
  })
  return { emulator, url, sessionKeys }
}

/** An upstream that answers 200 with the request headers it received, as JSON. */
export async function startEcho (t: TestContext): Promise<string> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    req.on('end', () => {
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers })
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(body)
    })
  })
  const url = await listen(server)
  t.teardown(() => closeServer(server))
  return url
}

/** A Redis for this test file, stopped at teardown. */
export async function redisFor (t: TestContext): Promise<TestRedis> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  return redis
}

export interface AuthStackOptions {
  wechatUrl: string
  echoUrl: string
  redisUrl?: string
  /** Deep-merged over the stack's config. */
  patch?: Record<string, unknown>
  /** The gateway's clock (buildGateway's `now`): tokens expire when the test moves it. */
  now?: () => number
}

/** A clock a test moves instead of sleeping: real time plus what the test added. */
export function testClock (): { now: () => number, advance: (ms: number) => void } {
  let offset = 0
  return { now: () => Date.now() + offset, advance: (ms) => { offset += ms } }
}

/** The config patch the auth tests share: emulator, one required-auth route to the echo upstream, Redis. */
export function authConfig (opts: AuthStackOptions): Record<string, unknown> {
  const base: Record<string, unknown> = {
    wechat: { baseUrl: opts.wechatUrl, timeout: '2s', retries: 2, apps: [APP_A] },
    // Far above what these tests send, so that a login limit never hides the behaviour under test.
    rateLimits: { login: { max: 100000, window: '1m', by: 'ip' } },
    routes: [{ name: 'echo', prefix: '/api', auth: 'required', upstreams: [{ name: 'v1', url: opts.echoUrl, weight: 1 }] }]
  }
  if (opts.redisUrl !== undefined) base.store = { type: 'redis', url: opts.redisUrl }
  return { ...base, ...(opts.patch ?? {}) }
}

/** startGateway with the auth stack's config; waits for the Redis store to be usable. */
export async function startAuthGateway (t: TestContext, opts: AuthStackOptions): Promise<StartedGateway> {
  const started = await startGateway(t, authConfig(opts), opts.now !== undefined ? { now: opts.now } : {})
  await started.gateway.store.ready(5000)
  return started
}

export interface Answer {
  status: number
  headers: Headers
  text: string
  /** Parsed JSON body (undefined when not JSON). */
  json: { code: number, message: string, data: any } | undefined
}

async function answer (res: Response): Promise<Answer> {
  const text = await res.text()
  let json: Answer['json']
  try { json = JSON.parse(text) } catch { json = undefined }
  return { status: res.status, headers: res.headers, text, json }
}

/** POST a JSON body (or a raw string with the given content type). */
export async function post (url: string, body: unknown, headers: Record<string, string> = {}, raw = false): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: raw ? headers : { 'content-type': 'application/json', ...headers },
    body: raw ? (body as string) : JSON.stringify(body)
  })
  return await answer(res)
}

export async function get (url: string, headers: Record<string, string> = {}): Promise<Answer> {
  return await answer(await fetch(url, { headers }))
}

/** The token pair /auth/login and /auth/refresh answer. */
export type Pair = TokenPair

/** Log in with a code; fails the caller's expectations loudly if the login did not succeed. */
export async function login (base: string, code: string, appId?: string): Promise<Pair> {
  const a = await post(base + '/auth/login', appId === undefined ? { code } : { code, appId })
  if (a.status !== 200 || a.json?.code !== 200) throw new Error(`login ${code} failed: ${a.status} ${a.text}`)
  return a.json.data as Pair
}

export const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** The value of one sample in Prometheus text format (0 when absent). */
export async function metric (adminUrl: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(adminUrl + '/metrics')).text()
  for (const line of text.split('\n')) {
    if (!line.startsWith(name + '{') && line !== name && !line.startsWith(name + ' ')) continue
    const open = line.indexOf('{')
    const close = line.lastIndexOf('}')
    const got: Record<string, string> = {}
    if (open !== -1) {
      for (const m of line.slice(open + 1, close).matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) got[m[1] as string] = m[2] as string
    }
    if (Object.entries(labels).every(([k, v]) => got[k] === v)) return Number(line.slice(open === -1 ? name.length : close + 1).trim())
  }
  return 0
}
