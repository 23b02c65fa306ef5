/**
 * The reload controller: the snapshot requests are served from, and the one
 * way to replace it (load, validate, demo check, build, swap, metrics, log).
 * It owns the WeChat clients of the snapshots it built and closes them.
 */
import fp from 'fastify-plugin'
import type { Logger } from 'pino'
import { findDemoCredentials } from '../config/demo.js'
import { ConfigError, formatProblem } from '../config/errors.js'
import { loadConfigFile, type LoadedConfig } from '../config/load.js'
import type { GatewayConfig } from '../config/schema.js'
import { expiryWarning, type TlsMaterial } from '../config/tls.js'
import { secureContextOptions, type TlsServer } from './http-server.js'
import type { Metrics } from '../metrics/index.js'
import { buildSnapshot, type Snapshot } from '../runtime.js'

declare module 'fastify' {
  interface FastifyInstance {
    snapshots: Snapshots
  }
}

export interface Snapshots {
  /** The snapshot requests are served from right now (read it once per request). */
  current: () => Snapshot
  /**
   * Load `file` again (default: the current one) and, when it is valid and different,
   * swap in a new snapshot. A refused file changes nothing; every problem is logged and counted.
   */
  reload: (file?: string) => Promise<ReloadResult>
}

export type ReloadResult =
  | { status: 'applied', hash: string, restartRequired: string[] }
  | { status: 'unchanged', hash: string }
  | { status: 'refused', problems: string[] }

export interface ConfigPluginOptions {
  loaded: LoadedConfig
  metrics: Metrics
  logger: Logger
  now: () => number
  /** The demo: the repository's public JWT secret is accepted (refused otherwise, at every reload). */
  demo: boolean
}

/** Settings that shape listeners, the server or the store: they change only with a restart. */
const RESTART_ONLY = ['listen', 'admin', 'store', 'trustProxy', 'limits', 'workers'] as const

/** What of a restart-only setting must stay: of `listen.tls`, whether it is on (its files are applied at reload). */
function restartValue (config: GatewayConfig, key: typeof RESTART_ONLY[number]): string {
  if (key !== 'listen') return JSON.stringify(config[key])
  return JSON.stringify({ ...config.listen, tls: config.listen.tls !== undefined })
}
// 60 s: requests still on a replaced snapshot may be mid-login; its WeChat client closes after that
const RETIRE_WECHAT_MS = 60_000

/** Throws ConfigError when `loaded` uses the public demo secret outside the demo; logs the warnings. */
export function checkDemoCredentials (loaded: LoadedConfig, demo: boolean, logger: Logger): void {
  const found = findDemoCredentials(loaded.config)
  if (!demo && found.problems.length > 0) throw new ConfigError(loaded.file, found.problems)
  for (const w of found.warnings) logger.warn({ path: w.path }, formatProblem(w))
}

export const configPlugin = fp<ConfigPluginOptions>(async (app, opts) => {
  const { metrics, logger, now, demo } = opts
  const { store, canary, rollouts } = app
  const build = async (loaded: LoadedConfig) => await buildSnapshot(loaded, { store, metrics, logger, now })
  let current = await build(opts.loaded)
  const retiring = new Map<Snapshot, NodeJS.Timeout>()

  const installMetrics = (snap: Snapshot) => {
    metrics.configInfo.reset()
    metrics.configInfo.set({ hash: snap.hash }, 1)
    metrics.configLastSuccess.set(snap.loadedAt / 1000)
  }
  metrics.configReloads.inc({ result: 'success' }, 0)
  metrics.configReloads.inc({ result: 'failure' }, 0)
  installMetrics(current)
  // The listener was built with TLS (app.ts): a reload applies a replaced certificate/key pair to it.
  const tlsServer = typeof (app.server as Partial<TlsServer>).setSecureContext === 'function' ? app.server as TlsServer : undefined
  let served: TlsMaterial | undefined
  const installTls = (snap: Snapshot) => {
    const next = snap.tls
    if (tlsServer === undefined || next === undefined || next.fingerprint === served?.fingerprint) return
    // New connections get it; open ones keep the certificate they were made with.
    tlsServer.setSecureContext(secureContextOptions(next))
    const from = served?.serial
    served = next
    metrics.tlsCertificateExpiry.reset()
    metrics.tlsCertificateExpiry.set({ serial: next.serial }, Math.floor(next.notAfter / 1000))
    logger.info({ serial: next.serial, subject: next.subject, notAfter: new Date(next.notAfter).toISOString(), ...(from === undefined ? {} : { from }) }, from === undefined ? 'TLS certificate loaded' : 'TLS certificate replaced; new connections get it')
    const warning = snap.config.listen.tls === undefined ? undefined : expiryWarning(snap.config.listen.tls, next, now())
    if (warning !== undefined) logger.warn({ path: warning.path }, formatProblem(warning))
  }
  installTls(current)
  canary.install(current, false)
  // A ramp already running (another instance, before a restart) is served at its step from the first request.
  await rollouts.install(current.routes)

  const retire = (snap: Snapshot) => {
    const timer = setTimeout(() => {
      retiring.delete(snap)
      snap.wechat.close().catch(() => {})
    }, RETIRE_WECHAT_MS)
    timer.unref()
    retiring.set(snap, timer)
  }

  /** `lineOf`: the refused file's, for problems found after it loaded (key files): the list `wegate check` prints. */
  const refuse = (file: string, err: unknown, lineOf?: LoadedConfig['lineOf']): ReloadResult => {
    const problems = err instanceof ConfigError
      ? err.problems.map((p) => formatProblem({ ...p, line: p.line ?? lineOf?.(p.path) }))
      : [err instanceof Error ? err.message : String(err)]
    metrics.configReloads.inc({ result: 'failure' })
    logger.error({ file, problems }, `config reload refused: ${problems.length} problem(s); still serving ${current.hash}`)
    return { status: 'refused', problems }
  }

  const reload = async (file = current.file): Promise<ReloadResult> => {
    let next: Snapshot
    let fresh: LoadedConfig | undefined
    try {
      fresh = await loadConfigFile(file)
      if (fresh.hash === current.hash) return { status: 'unchanged', hash: current.hash }
      checkDemoCredentials(fresh, demo, logger)
      next = await build(fresh)
    } catch (err) {
      return refuse(file, err, fresh?.lineOf)
    }
    const restartRequired = RESTART_ONLY.filter((k) => restartValue(current.config, k) !== restartValue(next.config, k))
    const previous = current
    // The swap: requests read `current` once, so in-flight ones finish on the old snapshot.
    current = next
    // a change for rollbacks only when gateway.yaml itself changed (a key file rotation keeps them)
    canary.install(next, next.fileHash !== previous.fileHash)
    await rollouts.install(next.routes)
    installMetrics(next)
    installTls(next)
    metrics.configReloads.inc({ result: 'success' })
    logger.level = next.config.logging.level
    logger.info({ file, from: previous.hash, to: next.hash, activation: canary.epoch(), routes: next.routes.routes.length }, 'config reloaded')
    if (restartRequired.length > 0) {
      logger.warn({ settings: restartRequired }, 'these settings only change on restart; the running values stay until then')
    }
    retire(previous)
    return { status: 'applied', hash: next.hash, restartRequired }
  }

  app.decorate('snapshots', { current: () => current, reload })
  app.addHook('onClose', async () => {
    for (const timer of retiring.values()) clearTimeout(timer)
    await Promise.allSettled([current, ...retiring.keys()].map(async (snap) => await snap.wechat.close()))
    retiring.clear()
  })
}, { name: 'wegate-config', fastify: '5.x', dependencies: ['wegate-store', 'wegate-canary', 'wegate-rollouts'] })
