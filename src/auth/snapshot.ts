/** What the auth routes read from the current config snapshot (once per request). */
import type { GatewayConfig } from '../config/schema.js'
import type { Guard } from './guard.js'
import type { TokenService } from './tokens.js'
import type { WeChatApp, WeChatClient } from './wechat.js'

export interface AuthSnapshot {
  readonly config: GatewayConfig
  readonly tokens: TokenService
  readonly guard: Guard
  readonly wechat: WeChatClient
  readonly apps: ReadonlyMap<string, WeChatApp>
}
