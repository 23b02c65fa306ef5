/**
 * buildGateway(loaded, deps) → the public and admin Fastify instances, wired
 * but not listening. No globals: the process wrapper (cli/serve.ts) and the
 * tests build it the same way.
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Http2Stream } from 'node:http2'
import type { Logger } from 'pino'
import { GatewayError } from './errors.js'
import proxyAddr from '@fastify/proxy-addr'
import type { LoadedConfig } from './config/load.js'
import type { GatewayConfig } from './config/schema.js'
import { loadTlsMaterial, type TlsMaterial } from './config/tls.js'
import { registerCors } from './http/cors.js'
import { registerHsts } from './http/hsts.js'
import { registerRateLimits } from './http/ratelimit.js'
import { normalisePath } from './proxy/path.js'
import { authPlugin } from './auth/routes.js'
import { proxyPlugin } from './proxy/forward.js'
import { attachWebSocketProxy } from './proxy/websocket.js'
import type { Snapshot } from './runtime.js'
import type { Store } from './store/index.js'
import { handleError, sendError } from './http/errors.js'
import { describeRoutes } from './http/schemas.js'
import { createMetrics, type Metrics } from './metrics/index.js'
import { createLogger } from './log.js'
import { accountingPlugin } from './http/accounting.js'
import { requestId } from './http/request-id.js'
import { adminPlugin } from './gateway/admin.js'
import { clientErrorHandler, createHttpServer, createTlsHttpServer, type RefusalLog } from './gateway/http-server.js'
import { canaryPlugin } from './gateway/canary.js'
import { registerRolloutAdmin, rolloutsPlugin } from './gateway/rollouts.js'
import { checkDemoCredentials, configPlugin, type ReloadResult } from './gateway/config.js'
import { lifecyclePlugin } from './gateway/lifecycle.js'
import { registerOpenApiRoute, serversOf } from './gateway/openapi.js'
import { storePlugin } from './gateway/store.js'
import { upstreamsPlugin } from './gateway/upstreams.js'
import { registerAccessTokenAdmin } from './wechat/admin-routes.js'
import { createWeChatHub } from './wechat/hub.js'
import { phoneHeader } from './wechat/phone.js'
import { wechatRoutes } from './wechat/routes.js'

export interface GatewayDeps {
  logger?: Logger
  metrics?: Metrics
  /** Shared state; default: created from `store` in the config (and closed on close). */
  store?: Store
  /** The clock (ms since the epoch) for tokens, sessions and the store; default Date.now. */
  now?: () => number
  /**
   * Listen on the admin port (default true). A cluster worker does not: the primary
   * serves /healthz, /readyz and the workers' summed /metrics (cli/serve.ts).
   */
  admin?: boolean
  /**
   * The demo (`serve --demo`): the repository's public JWT secret is accepted. Otherwise a
   * config that uses it is refused, at start (ConfigError) and at every reload.
   */
  demo?: boolean
  /** Real-time period of the automatic ramps' background tick (ms; default 1000); 0: none (tests drive `rollouts.tick()`). */
  rolloutTickMs?: number
  /** Connections per upstream origin (default 256); tests saturate a small pool. */
  upstreamConnections?: number
}

export type { Snapshot } from './runtime.js'
export type { ReloadResult } from './gateway/config.js'

export interface Gateway {
  readonly public: FastifyInstance
  readonly admin: FastifyInstance
  readonly metrics: Metrics
  readonly logger: Logger
  readonly store: Store
  /** The snapshot requests are served from right now. */
  snapshot: () => Snapshot
  /** Ready: config loaded, dependencies reachable, not draining. */
  isReady: () => boolean
  /**
   * Load `file` again and, when it is valid and different, swap in a new snapshot.
   * A refused file changes nothing; every problem is logged and counted.
   */
  reload: (file?: string) => Promise<ReloadResult>
  /** Bind both listeners on the configured addresses; returns their base URLs (adminUrl '' without one). */
  listen: () => Promise<{ publicUrl: string, adminUrl: string }>
  /**
   * Graceful stop: readiness false, keep serving `shutdown.delay`, stop accepting,
   * let in-flight requests finish (at most `shutdown.timeout`), then `public.close()`,
   * which closes everything the gateway opened (admin listener included).
   */
  shutdown: () => Promise<void>
}

export async function buildGateway (loaded: LoadedConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const { config } = loaded
  const demo = deps.demo === true
  const now = deps.now ?? Date.now
  const logger = deps.logger ?? createLogger({ level: config.logging.level })
  // Before anything is created: a refused config must leave nothing running.
  checkDemoCredentials(loaded, demo, logger)
  const metrics = deps.metrics ?? createMetrics()
  // Router-level failures run no hooks: they are accounted for through this, once wired.
  const accounting = { track: (_request: FastifyRequest, _reply: FastifyReply): void => {} }
  // The certificate the listener starts with; a reload applies a replaced pair (gateway/config.ts).
  const tls = config.listen.tls === undefined ? undefined : await loadTlsMaterial(config.listen.tls, loaded.file, now())
  const app = createPublicServer(config, { logger, metrics }, accounting, tls)
  try {
    // Before any route: the routes' schemas are the OpenAPI description (gateway/openapi.ts).
    await describeRoutes(app)
    await app.register(storePlugin, { config: config.store, logger, metrics, now, store: deps.store })
    await app.register(canaryPlugin, { metrics, logger })
    await app.register(rolloutsPlugin, { metrics, logger, now, tickMs: deps.rolloutTickMs })
    await app.register(upstreamsPlugin, { connections: deps.upstreamConnections })
    await app.register(configPlugin, { loaded, metrics, logger, now, demo })
    await app.register(lifecyclePlugin, { logger })
    await app.register(adminPlugin, { metrics, logger })
    return await wire(app, { config, logger, metrics, now, accounting, admin: deps.admin !== false })
  } catch (err) {
    await app.close()
    throw err
  }
}

/** The public Fastify instance with the server-level settings (restart-only: they shape the server). */
function createPublicServer (config: GatewayConfig, refusals: RefusalLog, accounting: Accounting, tls: TlsMaterial | undefined): FastifyInstance {
  const { limits, trustProxy } = config
  const { logger } = refusals
  return Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    requestIdHeader: false,
    bodyLimit: limits.authBodyLimit,
    return503OnClosing: false,
    // Bodies are validated as sent: no type coercion, no silent removal of extra keys.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    forceCloseConnections: 'idle',
    clientErrorHandler: clientErrorHandler(refusals),
    // Router-level failures (a malformed URL, e.g. `/%zz`) get the envelope too.
    // (no hooks run for these, so they are tracked here)
    frameworkErrors: (err, request, reply) => { accounting.track(request, reply); handleError(err, request, reply) },
    // request.ip is the real client per trustProxy (restart to change: it shapes the server)
    trustProxy,
    // Node's limits, refusals before routing (counted, logged, answered), pipelining in order;
    // with TLS, HTTP/2 next to HTTP/1.1 (ALPN).
    serverFactory: (handler) => tls === undefined ? createHttpServer(limits, handler, refusals) : createTlsHttpServer(limits, handler, refusals, tls)
  })
}

interface Accounting { track: (request: FastifyRequest, reply: FastifyReply) => void }

interface WireOptions {
  config: GatewayConfig
  accounting: Accounting
  logger: Logger
  metrics: Metrics
  now: () => number
  admin: boolean
}

/** Routes, hooks, WebSocket and admin on top of the resource plugins. */
async function wire (app: FastifyInstance, opts: WireOptions): Promise<Gateway> {
  const { config, logger, metrics, now } = opts
  const { store, canary, rollouts, lifecycle } = app
  const snapshot = app.snapshots.current
  const trustProxy = config.trustProxy
  const trustFn = typeof trustProxy === 'boolean' ? () => trustProxy : proxyAddr.compile(trustProxy)
  const trusted = (address: string) => trustFn(address, 0)

  app.setErrorHandler(handleError)
  app.setNotFoundHandler((_request, reply) => sendError(reply, new GatewayError('NO_ROUTE')))

  // Every request: timed, its id returned, accounted for when its response closes (http/accounting.ts).
  await app.register(accountingPlugin, { logger, metrics, trusted })
  const accounting = app.accounting
  const track = (request: FastifyRequest, reply: FastifyReply): void => {
    accounting.track(request, reply)
    if (lifecycle.draining) {
      // HTTP/2 has no Connection header: GOAWAY instead (this stream and any open ones finish).
      const raw = request.raw as FastifyRequest['raw'] & { stream?: Http2Stream }
      if (raw.stream !== undefined) raw.stream.session?.close()
      else reply.header('connection', 'close')
    }
  }
  opts.accounting.track = track
  app.addHook('onRequest', (request, reply, done) => {
    track(request, reply)
    done(lifecycle.closing ? new GatewayError('SHUTTING_DOWN') : undefined)
  })

  registerHsts(app, config.listen.tls !== undefined, () => snapshot().config)
  // CORS preflights are answered here, before any token check or rate limit (http/cors.ts).
  registerCors(app, {
    config: () => snapshot().config,
    route: (url) => {
      const target = normalisePath(url)
      return target.ok ? snapshot().routes.match(target.path)?.config : undefined
    }
  })

  const limiters = await registerRateLimits(app, {
    store,
    keyPrefix: config.store.keyPrefix,
    metrics,
    loginRule: () => snapshot().config.rateLimits.login
  })
  await app.register(authPlugin, { snapshot, store, metrics, now, loginLimiter: limiters.login })
  // The credential hub: /auth/decrypt, /auth/phone, /auth/session; the shared access_token.
  const hub = createWeChatHub({ redis: store.redisConnection(), keyPrefix: config.store.keyPrefix, http: () => snapshot().wechatHttp, apps: () => snapshot().apps, logger, metrics, now })
  app.addHook('onClose', async () => { hub.close() })
  const phoneOf = async (appId: string, openid: string): Promise<string | undefined> => {
    const p = await hub.phones.get(appId, openid)
    return p === null ? undefined : phoneHeader(p)
  }
  await app.register(wechatRoutes, {
    hub,
    authenticate: (authorization) => snapshot().guard.authenticate(authorization, true)!,
    sessionKey: (appId, openid) => store.getSessionKey(appId, openid),
    settings: () => ({ decryptMaxAgeMs: snapshot().config.wechat.decryptMaxAge, phoneTtlMs: snapshot().config.tokens.sessionTtl }),
    rateLimit: (endpoint, openid, ip) => limiters.routeLimit({ routeName: `auth_${endpoint}`, scope: `/auth/${endpoint}`, rateRule: snapshot().config.rateLimits[endpoint], callerOpenid: openid, ip }),
    metrics,
    now
  })
  await app.register(proxyPlugin, {
    snapshot,
    upstreams: app.upstreams,
    metrics,
    trusted,
    onOutcome: (route, upstream, outcome, ms) => {
      canary.record(route, upstream, outcome)
      rollouts.record(route, upstream, outcome, ms)
    },
    rateLimit: limiters.routeLimit,
    phoneOf
  })

  // wx.connectSocket: upgrades are authenticated and routed like requests.
  const websockets = attachWebSocketProxy(app.server, {
    snapshot,
    metrics,
    trusted,
    logger,
    accounting,
    requestId,
    closing: () => lifecycle.closing,
    onOutcome: canary.record,
    rateLimit: limiters.routeLimit,
    phoneOf,
    now
  })
  // app.close() waits for upgraded sockets, which closeAllConnections() does not reach.
  app.addHook('preClose', async () => { websockets.close() })

  const admin = app.admin.server
  registerAccessTokenAdmin(admin, { apiToken: config.admin.apiToken, tokens: hub.tokens })
  registerRolloutAdmin(admin, { apiToken: config.admin.apiToken, rollouts })
  registerOpenApiRoute(admin, app, serversOf(config))
  return {
    public: app,
    admin,
    metrics,
    logger,
    store,
    snapshot,
    isReady: app.admin.ready,
    reload: app.snapshots.reload,
    async listen () {
      const address = await app.listen({ host: config.listen.host, port: config.listen.port })
      const publicUrl = config.listen.tls === undefined ? address : address.replace(/^http:/, 'https:')
      const adminUrl = opts.admin ? await admin.listen({ host: config.admin.host, port: config.admin.port }) : ''
      return { publicUrl, adminUrl }
    },
    shutdown: lifecycle.shutdown
  }
}
