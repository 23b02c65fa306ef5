/** `wegate emulator`: the WeChat API stand-in on its own, for development and demos. */
import { createWeChatEmulator, DEMO_APP, type WeChatEmulatorApp } from '../emulator/wechat.js'
import { createLogger } from '../log.js'

export interface EmulatorOptions {
  port: number
  host: string
  /** `appId:secret` pairs; none → the demo app. */
  apps: string[]
}

export async function runEmulator (opts: EmulatorOptions): Promise<void> {
  const apps: WeChatEmulatorApp[] = opts.apps.map((pair) => {
    const i = pair.indexOf(':')
    if (i <= 0 || i === pair.length - 1) throw new Error(`--app expects appId:secret, got '${pair}'`)
    return { appId: pair.slice(0, i), secret: pair.slice(i + 1) }
  })
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) throw new Error('--port expects a port number')
  const logger = createLogger().child({ component: 'wechat-emulator' })
  const emulator = createWeChatEmulator({ apps: apps.length > 0 ? apps : [DEMO_APP], logger })
  const url = await emulator.listen({ port: opts.port, host: opts.host })
  logger.info({ url, apps: (apps.length > 0 ? apps : [DEMO_APP]).map((a) => a.appId) }, 'WeChat emulator listening (GET /sns/jscode2session)')
  const stop = () => { emulator.close().then(() => { process.exitCode = 0 }, () => { process.exitCode = 1 }) }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}
