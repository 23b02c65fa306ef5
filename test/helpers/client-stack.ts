/**
 * A real wegate for the mini-program client's tests: the WeChat emulator, a
 * real Redis, an echo upstream on /api (auth required), a WebSocket echo on
 * /ws (auth required), a foreign host that records what it receives, and a
 * gateway clock the tests can move. The client library is loaded from its
 * built dist/, as a mini program would get it.
 */
import { existsSync, readdirSync, statSync } from 'node:fs'
import { createRequire } from 'node:module'
import type * as ClientLib from '../../client/miniprogram/src/index.js'
import type { WeChatEmulator, WeChatEmulatorApp } from '../../src/emulator/wechat.js'
import { APP_A, authConfig, redisFor } from './auth.js'
import { startGateway, type TestContext } from './gateway.js'
import { startHubEmulator } from './hub.js'
import { startEcho, startUpstream, type Started, type TestUpstream } from './upstream.js'
import { startWsUpstream, type Handshake } from './websocket.js'

const DIST = new URL('../../client/miniprogram/dist/index.js', import.meta.url)

/** The package as built by `npm run build` (client/miniprogram/dist). */
export function loadClient (): typeof ClientLib {
  if (!existsSync(DIST)) throw new Error('client/miniprogram/dist is missing: run `npm run build` first')
  const src = new URL('../../client/miniprogram/src/', import.meta.url)
  const newest = Math.max(...readdirSync(src).map((f) => statSync(new URL(f, src)).mtimeMs))
  if (newest > statSync(DIST).mtimeMs) throw new Error('client/miniprogram/dist is older than its source: run `npm run build`')
  return createRequire(import.meta.url)(DIST.pathname) as typeof ClientLib
}

export interface ClientStack {
  url: string
  adminUrl: string
  /** The WeChat emulator (code2Session, stable_token, getuserphonenumber). */
  emulator: WeChatEmulator
  echo: Started
  foreign: TestUpstream
  /** Handshakes the WebSocket upstream (echo `ws:<message>`) received. */
  handshakes: Handshake[]
  /** Move the gateway's clock forward (ms). */
  advance: (ms: number) => void
}

export interface ClientStackOptions {
  /** Default 0s, so that a second refresh with one token is a reuse that ends the session. */
  refreshGrace?: string
  /** The mini programs (emulator and gateway); default the demo app alone. */
  apps?: WeChatEmulatorApp[]
}

export async function startClientStack (t: TestContext, opts: ClientStackOptions = {}): Promise<ClientStack> {
  const redis = await redisFor(t)
  const apps = opts.apps ?? [APP_A]
  const { emu: emulator, url: wechatUrl } = await startHubEmulator(t, { apps })
  const echo = await startEcho(t, 'api')
  const ws = await startWsUpstream(t, 'ws')
  const foreign = await startUpstream(t, 'foreign')
  let offset = 0
  const config = authConfig({
    wechatUrl,
    echoUrl: echo.url,
    redisUrl: redis.url,
    patch: {
      wechat: { baseUrl: wechatUrl, timeout: '2s', retries: 2, apps },
      // No grace window: a second refresh with the same token would be a reuse and end the session,
      // so every test also proves the client never sends one.
      tokens: { keys: [{ kid: 'k1', secret: 'client-test-secret-0123456789abcdef' }], accessTtl: '15m', refreshTtl: '1d', refreshGrace: opts.refreshGrace ?? '0s' },
      routes: [
        { name: 'api', prefix: '/api', auth: 'required', upstreams: [{ name: 'v1', url: echo.url, weight: 1 }] },
        { name: 'ws', prefix: '/ws', auth: 'required', upstreams: [{ name: 'ws', url: ws.url, weight: 1 }] }
      ]
    }
  })
  const started = await startGateway(t, config, { now: () => Date.now() + offset })
  await started.gateway.store.ready(5000)
  return {
    url: started.url,
    adminUrl: started.adminUrl,
    emulator,
    echo,
    foreign,
    handshakes: ws.handshakes,
    advance: (ms) => { offset += ms }
  }
}

/** Sum of every sample of a metric (all label sets). */
export async function metricSum (adminUrl: string, name: string): Promise<number> {
  const text = await (await fetch(adminUrl + '/metrics')).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(name + '{') || line.startsWith(name + ' ')) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}
