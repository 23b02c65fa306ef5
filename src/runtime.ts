/**
 * A snapshot is everything a request needs that comes from gateway.yaml: route
 * table and pickers, token keys and verifiers, the WeChat apps and client.
 * It is built whole (and validated) before it serves anything, and handlers
 * read the current one once per request, so a reload swaps it in one step and
 * in-flight requests finish on the snapshot they started with.
 */
import type { LoadedConfig } from './config/load.js'
import { loadTlsMaterial, type TlsMaterial } from './config/tls.js'
import type { GatewayConfig } from './config/schema.js'
import { createGuard, type Guard } from './auth/guard.js'
import { createTokenService, type TokenService } from './auth/tokens.js'
import { createWeChatClient, type WeChatApp, type WeChatClient } from './auth/wechat.js'
import { createWeChatHttp, type WeChatHttp } from './wechat/http.js'
import type { Metrics } from './metrics/index.js'
import { buildRouteTable, type RouteTable } from './proxy/routes.js'
import type { Authenticate } from './proxy/types.js'
import type { Store } from './store/index.js'
import type { Logger } from 'pino'

export interface Snapshot {
  readonly config: GatewayConfig
  /** The config's identity: file and key files (see LoadedConfig). */
  readonly hash: string
  /** The file's bytes alone: canary rollbacks are keyed by it. */
  readonly fileHash: string
  readonly file: string
  readonly loadedAt: number
  readonly routes: RouteTable
  readonly tokens: TokenService
  readonly guard: Guard
  readonly authenticate: Authenticate
  readonly wechat: WeChatClient
  /** The snapshot's one transport to WeChat (code2Session and the credential hub's calls); closed with `wechat`. */
  readonly wechatHttp: WeChatHttp
  readonly apps: ReadonlyMap<string, WeChatApp>
  /** The public listener's certificate and key (`listen.tls`), read and checked; applied to new connections on a swap. */
  readonly tls: TlsMaterial | undefined
}

export interface SnapshotDeps {
  store: Store
  metrics: Metrics
  logger: Logger
  /** Clock (ms) for token lifetimes; default Date.now. */
  now?: () => number
}

/** Build a complete snapshot from a loaded config. Throws (ConfigError for key problems) without side effects. */
export async function buildSnapshot (loaded: LoadedConfig, deps: SnapshotDeps): Promise<Snapshot> {
  const { config } = loaded
  const now = deps.now ?? Date.now
  const tokens = await createTokenService(config.tokens, { now })
  const tls = config.listen.tls === undefined ? undefined : await loadTlsMaterial(config.listen.tls, loaded.file, now())
  const routes = buildRouteTable(config.routes)
  const apps = new Map(config.wechat.apps.map((a) => [a.appId, a]))
  const guard = createGuard(tokens, deps.store, deps.metrics, apps)
  const logger = deps.logger.child({ component: 'wechat' })
  const wechatHttp = createWeChatHttp({
    baseUrl: config.wechat.baseUrl,
    timeoutMs: config.wechat.timeout,
    retries: config.wechat.retries,
    logger,
    observe: (api, result) => deps.metrics.wechatCalls.inc({ api, errcode: result })
  })
  const wechat = createWeChatClient({ http: wechatHttp, logger })
  return {
    config,
    hash: loaded.hash,
    fileHash: loaded.fileHash,
    file: loaded.file,
    loadedAt: now(),
    routes,
    tokens,
    guard,
    authenticate: guard.authenticate,
    wechat,
    wechatHttp,
    apps,
    tls
  }
}
