/**
 * The credential hub's test stack: the WeChat emulator (on an optional clock),
 * WeChat's official decrypt sample as an app, and a gateway config with one
 * `injectPhone` route and one plain route to an echo upstream.
 */
import { createWeChatEmulator, type WeChatEmulator, type WeChatEmulatorApp } from '../../src/emulator/wechat.js'
import { APP_A } from './auth.js'
import type { TestContext } from './gateway.js'
import { OFFICIAL_SAMPLE } from './wechat-sample.js'

/** The app of WeChat's official decrypt sample (its watermark names this appId). */
export const SAMPLE_APP: WeChatEmulatorApp = { appId: OFFICIAL_SAMPLE.appId, secret: 'sample-app-secret' }

/** A wx.login code for which the emulator hands out the official sample's session_key. */
export const sampleCode = (suffix: number | string): string =>
  `key-${Buffer.from(OFFICIAL_SAMPLE.sessionKey, 'base64').toString('base64url')}-${suffix}`

/** A 40-character admin.apiToken for the tests. */
export const ADMIN_TOKEN = 'admin-token-0123456789-abcdefghij-XYZ!'

export async function startHubEmulator (t: TestContext, opts: { apps?: WeChatEmulatorApp[], now?: () => number } = {}): Promise<{ emu: WeChatEmulator, url: string }> {
  const emu = createWeChatEmulator({ apps: opts.apps ?? [APP_A, SAMPLE_APP], ...(opts.now !== undefined ? { now: opts.now } : {}) })
  const url = await emu.listen({ port: 0 })
  t.teardown(() => emu.close())
  return { emu, url }
}

export interface HubConfigOptions {
  wechatUrl: string
  echoUrl: string
  redisUrl?: string
  apiToken?: string
  decryptMaxAge?: string
}

/**
 * Both apps, a route that gets X-Phone-Number (/api/phone) and one that does not (/api/plain).
 * WeChat timeout 15 s: a loaded machine must not turn a slow answer into a retry that finds
 * its single-use phone code already spent.
 */
export function hubConfig (opts: HubConfigOptions): Record<string, unknown> {
  const patch: Record<string, unknown> = {
    wechat: { baseUrl: opts.wechatUrl, timeout: '15s', retries: 1, apps: [APP_A, SAMPLE_APP], ...(opts.decryptMaxAge !== undefined ? { decryptMaxAge: opts.decryptMaxAge } : {}) },
    // Generous: the hub's tests call /auth/phone and /auth/decrypt in bursts (hub-ratelimit.test.ts tests the limits).
    rateLimits: { login: { max: 100000, window: '1m', by: 'ip' }, phone: { max: 100000 }, decrypt: { max: 100000 }, session: { max: 100000 } },
    routes: [
      { name: 'phone', prefix: '/api/phone', auth: 'required', injectPhone: true, upstreams: [{ name: 'v1', url: opts.echoUrl, weight: 1 }] },
      { name: 'plain', prefix: '/api/plain', auth: 'optional', upstreams: [{ name: 'v1', url: opts.echoUrl, weight: 1 }] }
    ]
  }
  if (opts.redisUrl !== undefined) patch.store = { type: 'redis', url: opts.redisUrl }
  if (opts.apiToken !== undefined) patch.admin = { apiToken: opts.apiToken }
  return patch
}
