/**
 * Automatic canary rollback, wired: one error-rate tracker per watched
 * upstream and snapshot; when it trips, the upstream's effective weight drops
 * to 0 on this instance at once and the rollback is announced through the
 * store so every other instance applies it too (Redis pub/sub, re-read after
 * reconnects). A rollback is keyed by the hash of the config file: it lasts until
 * the file changes — an SRE decides when the canary gets traffic again (a key
 * file rotation alone does not end it).
 */
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'
import { createRollbackTracker, type RollbackTracker } from './rollback.js'
import type { CompiledRoute, CompiledUpstream, RouteTable } from './routes.js'
import type { UpstreamOutcome } from './forward.js'

/** Rollback announcements outlive any sane rollout; the key's config hash ends them sooner. */
const ANNOUNCE_TTL_MS = 7 * 86_400_000

interface Installed {
  /** Hash of the config file's bytes (not of the key files). */
  readonly fileHash: string
  readonly routes: RouteTable
}

export interface CanaryControl {
  /** Start tracking a new snapshot (fresh windows, configured weights, rollbacks already announced for it). */
  install: (snap: Installed) => void
  /** Record one forwarded request's outcome. */
  record: (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome) => void
}

export function createCanaryControl (opts: { store: Store, metrics: Metrics, logger: Logger, current: () => Installed }): CanaryControl {
  const { store, metrics, logger } = opts
  // Per route object (so per snapshot): its tracker and the hash of the config it belongs to.
  const trackers = new WeakMap<CompiledRoute, { tracker: RollbackTracker, snap: Installed }>()

  const publishWeights = (route: CompiledRoute) => {
    const weights = route.picker.weights
    route.upstreams.forEach((u, i) => metrics.upstreamWeight.set({ route: route.name, upstream: u.name }, weights[i]))
  }

  const keyOf = (hash: string, route: CompiledRoute, upstream: CompiledUpstream) => `${hash}/${route.name}/${upstream.name}`

  const apply = (snap: Installed, route: CompiledRoute, upstream: CompiledUpstream, source: 'local' | 'announced'): void => {
    if (!route.rollBack(upstream.index)) return
    metrics.canaryRollbacks.inc({ route: route.name, upstream: upstream.name })
    publishWeights(route)
    const stats = trackers.get(route)?.tracker.stats()
    logger.warn({ route: route.name, upstream: upstream.name, source, window: stats, weights: route.picker.weights },
      'canary rolled back: effective weight is now 0 until the config changes')
    if (source === 'local') {
      store.announceRollback(keyOf(snap.fileHash, route, upstream), Date.now() + ANNOUNCE_TTL_MS).catch((err: unknown) => {
        logger.error({ err, route: route.name, upstream: upstream.name }, 'could not announce the rollback to other instances')
      })
    }
  }

  const applyAnnounced = (key: string): void => {
    const snap = opts.current()
    const prefix = `${snap.fileHash}/`
    if (!key.startsWith(prefix)) return
    const [routeName, upstreamName] = key.slice(prefix.length).split('/')
    const route = snap.routes.get(routeName)
    const upstream = route?.upstreams.find((u) => u.name === upstreamName)
    if (route !== undefined && upstream !== undefined) apply(snap, route, upstream, 'announced')
  }
  store.onRollback(applyAnnounced)

  return {
    install (snap) {
      metrics.upstreamWeight.reset()
      for (const route of snap.routes.routes) {
        publishWeights(route)
        const rb = route.config.canary?.rollback
        const watched = route.rollbackUpstream
        if (rb === undefined || watched === undefined) continue
        trackers.set(route, { tracker: createRollbackTracker({ errorRate: rb.errorRate, windowMs: rb.window, minRequests: rb.minRequests }), snap })
        // Present from the start (at 0), so increase() sees the first rollback.
        metrics.canaryRollbacks.inc({ route: route.name, upstream: watched.name }, 0)
      }
      for (const key of store.rollbacks()) applyAnnounced(key)
    },
    record (route, upstream, outcome) {
      if (route.rollbackUpstream !== upstream) return
      const t = trackers.get(route)
      if (t !== undefined && t.tracker.record(outcome === 'error')) apply(t.snap, route, upstream, 'local')
    }
  }
}
