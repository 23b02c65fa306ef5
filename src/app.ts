/**
 * buildGateway(loaded, deps) → the public and admin Fastify instances, wired
 * but not listening. No globals: the process wrapper (cli/serve.ts) and the
 * tests build it the same way.
 */
import { randomUUID } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { GatewayError } from './errors.js'
import proxyAddr from '@fastify/proxy-addr'
import { Pool, type Dispatcher } from 'undici'
import { findDemoCredentials } from './config/demo.js'
import { ConfigError, formatProblem } from './config/errors.js'
import { loadConfigFile, type LoadedConfig } from './config/load.js'
import { registerRateLimits } from './http/ratelimit.js'
import { createCanaryControl } from './proxy/canary.js'
import { authPlugin } from './auth/routes.js'
import { proxyPlugin } from './proxy/forward.js'
import { attachWebSocketProxy } from './proxy/websocket.js'
import { buildSnapshot, type Snapshot } from './runtime.js'
import { createStore, type Store } from './store/index.js'
import { handleClientError, handleError, sendError } from './http/errors.js'
import { createMetrics, type Metrics } from './metrics/index.js'
import { createLogger } from './log.js'
import { createAccessLog } from './http/access-log.js'

declare module 'fastify' {
  interface FastifyRequest {
    /** Name of the route that served this request ('' until matched). */
    routeName: string
    /** Name of the upstream chosen ('' when none). */
    upstreamName: string
    /** performance.now() when the request arrived. */
    startedAt: number
    /** The envelope code when the gateway answered with an error (0 otherwise), for the access line. */
    errorCode: number
  }
}

const REQUEST = Symbol('wegate.request')
type TrackedResponse = ServerResponse & { [REQUEST]?: FastifyRequest | undefined }

export interface GatewayDeps {
  logger?: Logger
  metrics?: Metrics
  /** Shared state; default: created from `store` in the config (and closed on shutdown). */
  store?: Store
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
}

export type { Snapshot } from './runtime.js'

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
   * let in-flight requests finish (at most `shutdown.timeout`), close.
   */
  shutdown: () => Promise<void>
}

export type ReloadResult =
  | { status: 'applied', hash: string, restartRequired: string[] }
  | { status: 'unchanged', hash: string }
  | { status: 'refused', problems: string[] }

/** Settings that shape listeners, the server or the store: they change only with a restart. */
const RESTART_ONLY = ['listen', 'admin', 'store', 'trustProxy', 'limits', 'workers'] as const

const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])

/** Honour a sane client X-Request-Id (so traces join up); otherwise mint one. */
function requestId (req: IncomingMessage): string {
  const given = req.headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

export async function buildGateway (loaded: LoadedConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const { config } = loaded
  const allowDemo = deps.demo === true
  // Before anything is created: a refused config must leave nothing running.
  const demoFound = findDemoCredentials(config)
  if (!allowDemo && demoFound.problems.length > 0) throw new ConfigError(loaded.file, demoFound.problems)
  const logger = deps.logger ?? createLogger({ level: config.logging.level })
  for (const w of demoFound.warnings) logger.warn({ path: w.path }, formatProblem(w))
  const metrics = deps.metrics ?? createMetrics()
  const ownStore = deps.store === undefined
  const store = deps.store ?? createStore(config.store, logger.child({ component: 'store' }), {
    observe: (op, seconds) => metrics.storeDuration.observe({ op }, seconds),
    onStateLost: () => metrics.storeStateLost.inc()
  })
  let current: Snapshot = await buildSnapshot(loaded, { store, metrics, logger })
  metrics.storeUp.set(store.healthy() ? 1 : 0)
  const storeUpTimer = setInterval(() => metrics.storeUp.set(store.healthy() ? 1 : 0), 1000)
  storeUpTimer.unref()
  const canary = createCanaryControl({ store, metrics, logger })
  const installMetrics = (snap: Snapshot) => {
    metrics.configInfo.reset()
    metrics.configInfo.set({ hash: snap.hash }, 1)
    metrics.configLastSuccess.set(snap.loadedAt / 1000)
  }
  metrics.configReloads.inc({ result: 'success' }, 0)
  metrics.configReloads.inc({ result: 'failure' }, 0)
  installMetrics(current)
  canary.install(current, false)

  // One keep-alive pool per upstream origin, shared by every snapshot that names it.
  const pools = new Map<string, Pool>()
  const poolFor = (origin: string): Dispatcher => {
    let pool = pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, {
        connections: 256,
        // below Node's default 5 s server keep-alive, so we never reuse a socket the upstream is closing
        keepAliveTimeout: 4_000,
        keepAliveMaxTimeout: 60_000,
        connect: { timeout: 5_000 }
      })
      pools.set(origin, pool)
    }
    return pool
  }
  const ensurePools = (snap: Snapshot) => { for (const r of snap.routes.routes) for (const u of r.upstreams) poolFor(u.origin) }
  ensurePools(current)
  const trustProxy = config.trustProxy
  const trustFn = typeof trustProxy === 'boolean' ? () => trustProxy : proxyAddr.compile(trustProxy)

  let draining = false
  let closing = false
  let shutdownPromise: Promise<void> | undefined

  const limits = config.limits
  let trackFrameworkError: (request: FastifyRequest, reply: FastifyReply) => void = () => {}
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    genReqId: requestId,
    requestIdHeader: false,
    bodyLimit: limits.authBodyLimit,
    return503OnClosing: false,
    // Bodies are validated as sent: no type coercion, no silent removal of extra keys.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    forceCloseConnections: 'idle',
    clientErrorHandler: handleClientError,
    // Router-level failures (a malformed URL, e.g. `/%zz`) get the envelope too.
    // (no hooks run for these, so they are tracked here)
    frameworkErrors: (err, request, reply) => { trackFrameworkError(request, reply); handleError(err, request, reply) },
    // request.ip is the real client per trustProxy (restart to change: it shapes the server)
    trustProxy,
    // Node enforces these before Fastify sees the request; clientErrorHandler answers them.
    serverFactory: (handler) => createServer({
      maxHeaderSize: limits.headerSize,
      requestTimeout: limits.requestTimeout,
      headersTimeout: limits.headersTimeout,
      keepAliveTimeout: limits.keepAliveTimeout,
      // Node checks the two timeouts above on this interval (default 30 s, far too coarse).
      connectionsCheckingInterval: Math.max(100, Math.min(1000, limits.headersTimeout / 4))
    }, handler)
  })
  app.decorateRequest('routeName', '')
  app.decorateRequest('upstreamName', '')
  app.decorateRequest('startedAt', 0)
  app.decorateRequest('errorCode', 0)
  app.setErrorHandler(handleError)
  app.setNotFoundHandler((_request, reply) => sendError(reply, new GatewayError('NO_ROUTE')))

  // The access line and request metrics come from the response's 'close', which fires for
  // every response: finished, or cut short (client gone, upstream broke off mid-body).
  const accessLog = createAccessLog(logger)
  const onResponseClose = function (this: TrackedResponse): void {
    const request = this[REQUEST]
    if (request === undefined) return
    this[REQUEST] = undefined
    const ms = performance.now() - request.startedAt
    const route = request.routeName === '' ? 'none' : request.routeName
    const upstream = request.upstreamName === '' ? 'none' : request.upstreamName
    // 499 (nginx's "client closed request"): the client left before any answer was sent.
    const status = this.headersSent ? this.statusCode : 499
    metrics.requests.inc({
      route,
      upstream,
      method: METHODS.has(request.method) ? request.method : 'OTHER',
      status_class: `${Math.floor(status / 100)}xx`
    })
    metrics.requestDuration.observe({ route, upstream }, ms / 1000)
    accessLog({ reqId: request.id, method: request.method, path: pathOf(request.url), route, upstream, status, code: request.errorCode, ms, aborted: !this.writableFinished })
  }

  /** Every request: timed, its id returned, accounted for when its response closes. */
  const track = (request: FastifyRequest, reply: FastifyReply): void => {
    request.startedAt = performance.now()
    const res = reply.raw as TrackedResponse
    res[REQUEST] = request
    res.on('close', onResponseClose)
    reply.header('x-request-id', request.id)
    if (draining) reply.header('connection', 'close')
  }
  trackFrameworkError = track
  app.addHook('onRequest', (request, reply, done) => {
    track(request, reply)
    done(closing ? new GatewayError('SHUTTING_DOWN') : undefined)
  })

  const limiters = await registerRateLimits(app, {
    store,
    keyPrefix: config.store.keyPrefix,
    metrics,
    loginRule: () => current.config.rateLimits.login
  })
  await app.register(authPlugin, { snapshot: () => current, store, metrics, loginLimiter: limiters.login })
  await app.register(proxyPlugin, {
    snapshot: () => current,
    pools: { get: (origin) => pools.get(origin) ?? poolFor(origin) },
    metrics,
    trusted: (address) => trustFn(address, 0),
    onOutcome: canary.record,
    rateLimiter: limiters.route
  })

  // wx.connectSocket: upgrades are authenticated and routed like requests.
  const websockets = attachWebSocketProxy(app.server, {
    snapshot: () => current,
    metrics,
    trusted: (address) => trustFn(address, 0),
    logger,
    requestId,
    closing: () => closing,
    onOutcome: canary.record,
    rateLimit: limiters.routeLimit
  })
  // app.close() waits for upgraded sockets, which closeAllConnections() does not reach.
  app.addHook('preClose', async () => { websockets.close() })

  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  admin.setErrorHandler(handleError)
  admin.setNotFoundHandler((_request, reply) => sendError(reply, new GatewayError('NO_ROUTE')))
  const isReady = () => !draining && store.healthy()
  admin.get('/healthz', async () => ({ status: 'ok' }))
  admin.get('/readyz', async (_request, reply) => {
    const ready = isReady()
    reply.code(ready ? 200 : 503)
    return { ready, draining, store: store.healthy() ? 'up' : 'down', config: current.hash }
  })
  admin.get('/metrics', async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return await metrics.registry.metrics()
  })

  const gateway: Gateway = {
    public: app,
    admin,
    metrics,
    logger,
    store,
    snapshot: () => current,
    isReady,
    async reload (file = current.file) {
      let next: Snapshot
      try {
        const fresh = await loadConfigFile(file)
        if (fresh.hash === current.hash) return { status: 'unchanged', hash: current.hash }
        const found = findDemoCredentials(fresh.config)
        if (!allowDemo && found.problems.length > 0) throw new ConfigError(file, found.problems)
        for (const w of found.warnings) logger.warn({ path: w.path }, formatProblem(w))
        next = await buildSnapshot(fresh, { store, metrics, logger })
      } catch (err) {
        const problems = err instanceof ConfigError ? err.problems.map(formatProblem) : [err instanceof Error ? err.message : String(err)]
        metrics.configReloads.inc({ result: 'failure' })
        logger.error({ file, problems }, `config reload refused: ${problems.length} problem(s); still serving ${current.hash}`)
        return { status: 'refused', problems }
      }
      const restartRequired = RESTART_ONLY.filter((k) => JSON.stringify(current.config[k]) !== JSON.stringify(next.config[k]))
      const previous = current
      ensurePools(next)
      // The swap: requests read `current` once, so in-flight ones finish on the old snapshot.
      current = next
      // a change for rollbacks only when gateway.yaml itself changed (a key file rotation keeps them)
      canary.install(next, next.fileHash !== previous.fileHash)
      installMetrics(next)
      metrics.configReloads.inc({ result: 'success' })
      logger.level = next.config.logging.level
      logger.info({ file, from: previous.hash, to: next.hash, activation: canary.epoch(), routes: next.routes.routes.length }, 'config reloaded')
      if (restartRequired.length > 0) {
        logger.warn({ settings: restartRequired }, 'these settings only change on restart; the running values stay until then')
      }
      // Requests still on the old snapshot may be mid-login: close its WeChat pool later.
      setTimeout(() => { previous.wechat.close().catch(() => {}) }, 60_000).unref()
      return { status: 'applied', hash: next.hash, restartRequired }
    },
    async listen () {
      const publicUrl = await app.listen({ host: config.listen.host, port: config.listen.port })
      const adminUrl = deps.admin === false ? '' : await admin.listen({ host: config.admin.host, port: config.admin.port })
      return { publicUrl, adminUrl }
    },
    shutdown () {
      shutdownPromise ??= (async () => {
        draining = true
        const { delay, timeout } = current.config.shutdown
        logger.info({ delayMs: delay, timeoutMs: timeout }, 'shutting down: readiness is false, draining')
        if (delay > 0) await sleep(delay)
        closing = true
        // Past the timeout, cut whatever is still open rather than hang the rollout.
        const force = setTimeout(() => {
          logger.warn('drain timeout reached: closing remaining connections')
          app.server.closeAllConnections()
        }, timeout)
        // Connections busy when closing began go idle (keep-alive) once their
        // response is out; close them as they do, instead of waiting for the timeout.
        const reap = setInterval(() => app.server.closeIdleConnections(), 50)
        try {
          await app.close()
        } finally {
          clearTimeout(force)
          clearInterval(reap)
        }
        await admin.close()
        clearInterval(storeUpTimer)
        canary.close()
        await Promise.allSettled([...pools.values()].map(async (p) => await p.close()))
        await current.wechat.close()
        if (ownStore) await store.close()
        logger.info('shutdown complete')
      })()
      return shutdownPromise
    }
  }
  return gateway
}

function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref())
