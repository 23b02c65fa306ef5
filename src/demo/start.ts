/**
 * `wegate serve --demo`: what runs next to the gateway so that `npm start` works
 * on a fresh checkout. The WeChat emulator listens where `wechat.baseUrl`
 * points, and a demo upstream wherever a route sends traffic to this machine,
 * named after the first upstream using it (`stable`, `canary`). So the ports
 * are the config's (gateway.yaml: 9400, 9501, 9502, each overridable by its
 * `${VAR}`), and a test can run the demo on free ones.
 */
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/schema.js'
import { createWeChatEmulator } from '../emulator/wechat.js'
import { startDemoUpstream } from './upstream.js'

// where the emulator listens when wechat.baseUrl is not on this machine (the real WeChat)
const EMULATOR_FALLBACK_PORT = 9400

/** Start the emulator and the demo upstreams; resolves to what closes them. */
export async function startDemo (config: GatewayConfig, logger: Logger): Promise<Array<() => Promise<void>>> {
  const closers: Array<() => Promise<void>> = []
  try {
    const wechat = localPort(config.wechat.baseUrl)
    const emulator = createWeChatEmulator({ apps: config.wechat.apps, logger: logger.child({ component: 'wechat-emulator' }) })
    const emulatorUrl = await emulator.listen({ port: wechat ?? EMULATOR_FALLBACK_PORT, host: '127.0.0.1' })
    closers.push(emulator.close)
    logger.info({ url: emulatorUrl }, 'WeChat emulator listening')

    const upstreams = new Map<number, string>() // port → version name
    for (const route of config.routes) {
      for (const u of route.upstreams) {
        const port = localPort(u.url)
        if (port !== undefined && !upstreams.has(port)) upstreams.set(port, u.name)
      }
    }
    const urls: Record<string, string> = {}
    for (const [port, name] of upstreams) {
      const demo = await startDemoUpstream(name, port)
      closers.push(demo.close)
      urls[name] = demo.url
    }
    logger.info(urls, 'demo upstreams listening')
    return closers
  } catch (err) {
    for (const close of closers) await close()
    throw err
  }
}

/** The port of an http URL on this machine, or undefined for anything else. */
function localPort (url: string): number | undefined {
  let u: URL
  try {
    u = new URL(url)
  } catch {
    return undefined
  }
  if (u.protocol !== 'http:' || !(u.hostname === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(u.hostname))) return undefined
  return u.port === '' ? 80 : Number(u.port)
}
