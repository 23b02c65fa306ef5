/**
 * The repository's demo credentials, published in gateway.yaml so that
 * `npm start` (`wegate serve --demo`) works on a fresh checkout. Outside the
 * demo they are a hole: the JWT secret is public, so anyone who has read the
 * repository can sign access tokens the gateway accepts.
 */
import type { ConfigProblem } from './errors.js'
import type { GatewayConfig } from './schema.js'

/** gateway.yaml's `${JWT_SECRET:-…}` default (test/cli.test.ts keeps the two in step). */
export const DEMO_JWT_SECRET = 'wegate-demo-secret-change-me-0123456789'
/** gateway.yaml's `${WX_SECRET:-…}` default: the emulator's demo app. */
export const DEMO_WECHAT_SECRET = 'demo-secret'

export interface DemoCredentials {
  /** Refused by `serve` and `check` unless `--demo`: the JWT demo secret signs or verifies tokens. */
  problems: ConfigProblem[]
  /** Reported, never refused: the demo AppSecret sent to something that is not a local emulator. */
  warnings: ConfigProblem[]
}

/** Find the demo credentials in a loaded config. */
export function findDemoCredentials (config: GatewayConfig): DemoCredentials {
  const problems: ConfigProblem[] = []
  const warnings: ConfigProblem[] = []
  if (config.tokens.algorithm === 'HS256') {
    // Every key verifies, so a demo key anywhere in the list lets anyone forge tokens.
    config.tokens.keys.forEach((k, i) => {
      if (k.secret === DEMO_JWT_SECRET) {
        problems.push({
          path: `tokens.keys[${i}].secret`,
          message: 'is the repository\'s public demo secret: anyone can sign tokens with it. ' +
            'Set JWT_SECRET to a random value of at least 32 characters (e.g. JWT_SECRET="$(openssl rand -base64 48)"), ' +
            'or run with --demo for a local trial'
        })
      }
    })
  }
  if (!isLoopback(config.wechat.baseUrl)) {
    config.wechat.apps.forEach((a, i) => {
      if (a.secret === DEMO_WECHAT_SECRET) {
        warnings.push({
          path: `wechat.apps[${i}].secret`,
          message: `is the emulator's demo AppSecret but wechat.baseUrl (${config.wechat.baseUrl}) is not a local emulator: ` +
            'WeChat will refuse every login (40125). Set WX_SECRET to the mini program\'s AppSecret'
        })
      }
    })
  }
  return { problems, warnings }
}

/** Is the URL's host this machine (where the emulator runs)? */
function isLoopback (url: string): boolean {
  let host: string
  try {
    host = new URL(url).hostname
  } catch {
    return false
  }
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}
