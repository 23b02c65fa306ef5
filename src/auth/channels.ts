/**
 * Which app a login is for. An app's type says how its users log in
 * (docs/channels.md): miniprogram and mobileApp send a code to POST /auth/login,
 * officialAccount and website go through the browser redirect of
 * /auth/wechat/authorize. `appId` may be left out when only one app can be meant.
 */
import { GatewayError } from '../errors.js'
import type { WeChatApp } from './wechat.js'

export type LoginFlow = 'code' | 'redirect'

/** officialAccount and website apps log in through the browser redirect. */
export function isRedirectApp (app: WeChatApp): boolean {
  return app.type === 'officialAccount' || app.type === 'website'
}

const typeOf = (app: WeChatApp): string => app.type ?? 'miniprogram'

/**
 * The app named by `appId`, or the only one the flow can mean: for a code login
 * the only mini program (or, with none, the only mobile App), for a redirect the
 * only officialAccount / website app. Throws UNKNOWN_APP or WRONG_LOGIN_FLOW.
 */
export function pickApp (apps: ReadonlyMap<string, WeChatApp>, appId: string | undefined, flow: LoginFlow): WeChatApp {
  if (appId !== undefined) {
    const app = apps.get(appId)
    if (app === undefined) throw new GatewayError('UNKNOWN_APP')
    if (isRedirectApp(app) !== (flow === 'redirect')) {
      throw new GatewayError('WRONG_LOGIN_FLOW', {
        message: flow === 'code'
          ? `App ${appId} is a ${typeOf(app)}: its users log in through GET /auth/wechat/authorize`
          : `App ${appId} is a ${typeOf(app)}: its users log in with POST /auth/login {code, appId}`
      })
    }
    return app
  }
  const all = [...apps.values()]
  let candidates: WeChatApp[]
  if (flow === 'redirect') {
    candidates = all.filter(isRedirectApp)
  } else {
    candidates = all.filter((a) => typeOf(a) === 'miniprogram')
    if (candidates.length === 0) candidates = all.filter((a) => a.type === 'mobileApp')
  }
  if (candidates.length === 1) return candidates[0]
  if (candidates.length === 0) throw new GatewayError('UNKNOWN_APP')
  const what = flow === 'redirect' ? 'official account / website apps' : typeOf(candidates[0]) === 'miniprogram' ? 'mini programs' : 'mobile Apps'
  throw new GatewayError('UNKNOWN_APP', { message: `appId is required: several ${what} are configured` })
}
