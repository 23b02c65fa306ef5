/**
 * `wegate serve`: load the config, build the gateway, listen, and hand the
 * process signals to cli/process.ts (SIGTERM/SIGINT drain and exit 0, SIGHUP reloads).
 */
import cluster from 'node:cluster'
import { availableParallelism } from 'node:os'
import { AggregatorRegistry } from 'prom-client'
import { buildGateway } from '../app.js'
import { createMetrics } from '../metrics/index.js'
import { answerAdminRelay } from './admin-relay.js'
import { servePrimary, STATUS_INTERVAL_MS, workerCount, type WorkerMessage } from './cluster.js'
import { formatProblem } from '../config/errors.js'
import { referencedFiles } from '../config/load.js'
import { createLogger } from '../log.js'
import { startDemo } from '../demo/start.js'
import { watchConfig } from '../config/watch.js'
import { ownProcess } from './process.js'
import { judgeConfig } from './verdict.js'

// 5 s: past the drain's own bound (shutdown.delay + shutdown.timeout), a crashed process exits regardless
const CRASH_GRACE_MS = 5000

export interface ServeOptions {
  file: string
  /** Also run the WeChat emulator and the demo upstreams, and allow the demo JWT secret (npm start). */
  demo: boolean
}

export async function serve (opts: ServeOptions): Promise<void> {
  // The same verdict and list as `wegate check`; the repository's JWT secret is public: outside
  // the demo, tokens signed with it could be forged by anyone.
  const verdict = await judgeConfig(opts.file, opts.demo)
  if (!verdict.ok) {
    process.stderr.write(`wegate: refusing to start, ${verdict.reason}:\n`)
    for (const p of verdict.problems) process.stderr.write(`  ${formatProblem(p)}\n`)
    process.exitCode = 1
    return
  }
  const { loaded } = verdict
  const logger = createLogger({ level: loaded.config.logging.level })
  const closers: Array<() => Promise<void>> = []

  // The demo: the WeChat emulator and the demo upstreams, where the config points.
  // (once: in the primary, not again in every worker)
  if (opts.demo && cluster.isPrimary) closers.push(...await startDemo(loaded.config, logger))

  // workers > 1: this process becomes the cluster primary; the workers run the code below.
  const workers = workerCount(loaded.config.workers, availableParallelism)
  if (workers > 1 && cluster.isPrimary) {
    await servePrimary(loaded, workers, logger)
    return
  }
  const inWorker = cluster.isWorker
  const metrics = createMetrics()
  // A worker whose primary goes away while it starts has nobody to serve for.
  const orphaned = () => { process.exit(1) }
  if (inWorker) {
    process.once('disconnect', orphaned)
    // The primary sums every worker's registry for /metrics: answer from the start, so a
    // scrape while this worker starts (or restarts) does not wait for it to time out.
    // eslint-disable-next-line no-new
    new AggregatorRegistry() // answers the primary's metrics requests in this worker
    AggregatorRegistry.setRegistries([metrics.registry])
  }

  const gateway = await buildGateway(loaded, { logger, metrics, admin: !inWorker, demo: opts.demo })
  const { publicUrl, adminUrl } = await gateway.listen()
  let report: NodeJS.Timeout | undefined
  if (inWorker) {
    process.off('disconnect', orphaned)
    const send = (m: WorkerMessage) => { if (process.connected) process.send?.(m) }
    // The primary relays the admin endpoints of the gateway itself (/rollouts) to a worker.
    answerAdminRelay(gateway.admin, logger)
    send({ type: 'wegate:listening', publicUrl })
    send({ type: 'wegate:config', hash: gateway.snapshot().hash })
    send({ type: 'wegate:status', ready: gateway.isReady() })
    report = setInterval(() => send({ type: 'wegate:status', ready: gateway.isReady() }), STATUS_INTERVAL_MS)
    report.unref()
  } else {
    logger.info({ publicUrl, adminUrl, config: loaded.file, hash: loaded.hash }, 'wegate listening')
  }
  if (opts.demo) process.stdout.write(demoBanner(publicUrl, adminUrl))

  // Hot reload: file changes (in place, rename, ConfigMap symlink swap) and SIGHUP share one queue.
  // The key files of the active config are watched too (a Secret rotation).
  const watcher = watchConfig({
    file: opts.file,
    related: () => referencedFiles(gateway.snapshot().config),
    logger: logger.child({ component: 'config-watch' }),
    onChange: async () => {
      const result = await gateway.reload(opts.file)
      // the primary follows (its access_token endpoints serve the reloaded AppSecrets)
      if (inWorker && result.status === 'applied' && process.connected) process.send?.({ type: 'wegate:config', hash: result.hash } satisfies WorkerMessage)
    }
  })
  const { shutdown } = loaded.config
  const owner = ownProcess({
    logger,
    crashDrainMs: shutdown.delay + shutdown.timeout + CRASH_GRACE_MS,
    reload: () => {
      logger.info({ signal: 'SIGHUP' }, 'reloading config')
      watcher.trigger()
    },
    stop: async () => {
      watcher.close()
      clearInterval(report)
      await gateway.shutdown()
      for (const close of closers) await close()
      // a worker's IPC channel would keep it alive
      if (inWorker && process.connected) process.disconnect()
    }
  })
  // A worker whose primary is gone drains and exits rather than serve unsupervised.
  if (inWorker) process.on('disconnect', () => owner.stop('primary disconnected'))
}

function demoBanner (publicUrl: string, adminUrl: string): string {
  const base = publicUrl.replace('0.0.0.0', '127.0.0.1')
  return `
wegate is running (demo: memory store, WeChat emulator, demo upstreams)
  public  ${base}
  admin   ${adminUrl}   (/healthz /readyz /metrics)

Try it:
  # 1. log in with a wx.login code (the emulator accepts any code once)
  curl -s -X POST ${base}/auth/login -H 'content-type: application/json' -d '{"code":"u-alice-1"}'
  # 2. call the demo API with the accessToken from the answer
  curl -s ${base}/api/hello -H "authorization: Bearer <accessToken>"
`
}
