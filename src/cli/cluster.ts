/**
 * `workers: N` (N > 1): the primary process of a node:cluster. It forks N
 * gateway workers that share the public port (connections are handed out
 * round-robin), and owns what must exist once per process group:
 *
 * - the admin port: /healthz, /readyz (ready when every worker is ready), and
 *   /metrics summed over the workers (prom-client's AggregatorRegistry; gauges
 *   declare how they combine, e.g. the effective weight takes the minimum);
 * - the workers' own admin endpoints (the automatic ramps' /rollouts), relayed to
 *   a ready worker (cli/admin-relay.ts);
 * - the signals: SIGTERM/SIGINT turn readiness false and drain every worker
 *   (each runs the single-process drain), then exit 0; SIGHUP reloads them all;
 * - a worker that dies is replaced (1 s later, backing off to 30 s while workers keep
 *   dying young), unless the group is stopping.
 *
 * Workers share state through Redis only (the config refuses the memory store).
 */
import cluster, { type Worker } from 'node:cluster'
import type { FastifyInstance } from 'fastify'
import type { Logger } from 'pino'
import { AggregatorRegistry } from 'prom-client'
import { loadConfigFile, type LoadedConfig } from '../config/load.js'
import { createAdminServer } from '../gateway/admin.js'
import { serveTokenAdmin, type TokenAdmin } from '../wechat/primary.js'
import { relayAdmin, type AdminRelay, type AdminRelayReply } from './admin-relay.js'
import { ownProcess } from './process.js'

/** Messages a worker sends to the primary. */
export type WorkerMessage =
  | { type: 'wegate:listening', publicUrl: string }
  | { type: 'wegate:status', ready: boolean }
  /** The hash of the config the worker serves: after it started and after every reload it applied. */
  | { type: 'wegate:config', hash: string }
  | AdminRelayReply

// 500 ms: how often a worker reports its readiness; the primary treats a report older than 2 s as not ready
export const STATUS_INTERVAL_MS = 500
const STATUS_STALE_MS = 2000
// 30 s: workers that have not listened by then mean the group cannot start
const START_TIMEOUT_MS = 30_000
// 1 s: pause before replacing a dead worker, doubling (to 30 s) while workers keep dying within 10 s
const RESPAWN_DELAY_MS = 1000
const RESPAWN_MAX_MS = 30_000
const QUICK_DEATH_MS = 10_000

/** Run the primary: fork `count` workers, serve the admin port, own the signals. */
export async function servePrimary (loaded: LoadedConfig, count: number, logger: Logger): Promise<void> {
  const { config } = loaded // restart-only settings (listeners, store, admin.apiToken); the rest: `current`
  let current = loaded
  const aggregator = new AggregatorRegistry()
  const status = new Map<number, { ready: boolean, at: number }>()
  const listening = new Set<number>() // worker ids that have reported listening
  const bornAt = new Map<number, number>()
  let stopping = false
  let publicUrl = ''
  let quickDeaths = 0
  // the admin server and its endpoints answered by a worker, once the workers are up
  const served: { admin?: FastifyInstance, relay?: AdminRelay, tokens?: TokenAdmin | undefined } = {}
  let onAllListening: (() => void) | undefined
  let onStopWhileStarting: (() => void) | undefined

  const workers = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  const fork = (): Worker => {
    const worker = cluster.fork()
    bornAt.set(worker.id, Date.now())
    worker.on('message', (m: WorkerMessage) => {
      if (m.type === 'wegate:status') {
        status.set(worker.id, { ready: m.ready, at: Date.now() })
      } else if (m.type === 'wegate:listening') {
        publicUrl = m.publicUrl
        listening.add(worker.id)
        logger.info({ worker: worker.id, pid: worker.process.pid }, 'worker listening')
        if (listening.size === count) onAllListening?.()
      } else if (m.type === 'wegate:config') {
        if (m.hash !== current.hash) follow(m.hash).catch((err: unknown) => logger.error({ err }, 'primary: could not follow the workers\' config'))
      } else if (m.type === 'wegate:admin-reply') {
        served.relay?.answer(m)
      }
    })
    return worker
  }
  cluster.on('exit', (worker, code, signal) => {
    status.delete(worker.id)
    listening.delete(worker.id)
    served.relay?.lost(worker.id)
    const lived = Date.now() - (bornAt.get(worker.id) ?? 0)
    bornAt.delete(worker.id)
    if (stopping) return
    // A worker that dies young again and again waits longer each time: 1 s, 2 s, 4 s … 30 s.
    quickDeaths = lived < QUICK_DEATH_MS ? quickDeaths + 1 : 0
    const delay = Math.min(RESPAWN_MAX_MS, RESPAWN_DELAY_MS * 2 ** Math.max(0, quickDeaths - 1))
    logger.error({ worker: worker.id, pid: worker.process.pid, code, signal, livedMs: lived, respawnInMs: delay }, 'worker exited; starting a new one')
    setTimeout(() => { if (!stopping) fork() }, delay).unref()
  })

  /**
   * A worker reloaded (SIGHUP or a file change) and applied the config `hash`: the primary
   * reads the file too and takes it when it is that same config (validated and built by the
   * worker). Another hash means the file changed again: the worker reports that one next.
   */
  let following: Promise<void> = Promise.resolve()
  const follow = (hash: string): Promise<void> => (following = following.then(async () => {
    if (hash === current.hash) return
    const fresh = await loadConfigFile(current.file)
    if (fresh.hash !== hash) return
    const from = current.hash
    current = fresh
    served.tokens?.reload(fresh.config)
    logger.level = fresh.config.logging.level
    logger.info({ file: fresh.file, from, to: fresh.hash }, 'primary: config reloaded (as the workers did)')
  }))

  // Signals are ours from the start: a SIGTERM while the workers are still starting drains them too.
  const drainWorkers = async (): Promise<void> => {
    stopping = true
    logger.info({ workers: workers().length }, 'draining every worker')
    onStopWhileStarting?.()
    // Past the workers' own drain bound, whatever is left is killed rather than hang the rollout.
    const force = setTimeout(() => { for (const w of workers()) w.process.kill('SIGKILL') }, drainBoundMs(current))
    await Promise.all(workers().map(async (w) => {
      if (w.isDead()) return
      const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()))
      w.process.kill('SIGTERM')
      await exited
    }))
    clearTimeout(force)
    await served.admin?.close()
    logger.info('shutdown complete')
  }
  const drainBoundMs = (c: LoadedConfig): number => c.config.shutdown.delay + c.config.shutdown.timeout + 5000
  ownProcess({
    logger,
    crashDrainMs: drainBoundMs(loaded) + 1000,
    stop: drainWorkers,
    reload: () => {
      // only to workers that are up: a starting worker has no SIGHUP handler yet (it would die)
      logger.info({ signal: 'SIGHUP', workers: listening.size }, 'reloading config in every worker')
      for (const w of workers()) if (listening.has(w.id)) w.process.kill('SIGHUP')
    }
  })

  const started = new Promise<boolean>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`workers did not listen within ${START_TIMEOUT_MS / 1000} s`)), START_TIMEOUT_MS)
    onAllListening = () => { clearTimeout(timer); onAllListening = undefined; resolve(true) }
    onStopWhileStarting = () => { clearTimeout(timer); resolve(false) }
  })
  for (let i = 0; i < count; i++) fork()
  try {
    if (!await started) return // stopped while starting: stop() drains what is there
  } catch (err) {
    stopping = true
    for (const w of workers()) w.process.kill('SIGKILL')
    throw err
  }
  onStopWhileStarting = undefined

  const ready = (): boolean => {
    if (stopping || status.size < count) return false
    const now = Date.now()
    for (const s of status.values()) if (!s.ready || now - s.at > STATUS_STALE_MS) return false
    return true
  }
  // - the ramps: a ready worker answers them (cli/admin-relay.ts), round robin
  let turn = 0
  const readyWorker = (): Worker | undefined => {
    const now = Date.now()
    const up = workers().filter((w) => {
      const s = status.get(w.id)
      return listening.has(w.id) && s?.ready === true && now - s.at <= STATUS_STALE_MS && w.isConnected()
    })
    return up.length === 0 ? undefined : up[turn++ % up.length]
  }
  const admin = served.admin = await createAdminServer(logger, {
    health: () => ({ status: 'ok', workers: workers().length }),
    readiness: () => ({
      ready: ready(),
      body: { draining: stopping, workers: { configured: count, ready: [...status.values()].filter((s) => s.ready).length }, config: current.hash }
    }),
    metrics: async () => ({ contentType: aggregator.contentType, text: await aggregator.clusterMetrics() })
  })
  // The shared access_token for backends (admin.apiToken), from the same Redis as the workers.
  const tokenAdmin = served.tokens = serveTokenAdmin(admin, current.config, logger)
  admin.addHook('onClose', async () => { await tokenAdmin?.close() })
  // The OpenAPI document needs the public routes too: a worker has them.
  served.relay = relayAdmin(admin, ['/rollouts', '/rollouts/*', '/openapi.json'], readyWorker, logger)
  const adminUrl = await admin.listen({ host: config.admin.host, port: config.admin.port })
  logger.info({ publicUrl, adminUrl, workers: count, config: loaded.file, hash: loaded.hash }, 'wegate listening')
}

/** `workers: auto` → one per CPU this process may run on. */
export function workerCount (setting: number | 'auto', available: () => number): number {
  return setting === 'auto' ? Math.max(1, available()) : setting
}
