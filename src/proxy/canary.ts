/**
 * Automatic canary rollback, wired: one error-rate tracker per watched
 * upstream and snapshot; when it trips, the upstream's effective weight drops
 * to 0 on this instance at once and the rollback is announced through the
 * store so every other instance applies it too (Redis pub/sub, re-read after
 * reconnects). A rollback lasts until the config changes — an SRE decides when
 * the canary gets traffic again — and going back to an earlier file is a change.
 *
 * So a rollback is keyed by the config's hash *and its activation*: the epoch
 * minted when an instance applied that config as a change (a reload with new
 * content). Activations are announced through the same store channel as
 * rollbacks, as markers (`<hash>@<epoch>`); rollbacks are
 * `<hash>@<epoch>/<route>/<upstream>` (`<hash>/<route>/<upstream>` before any
 * marker: epoch ''). With several instances:
 * - an instance that reloads a change the others already made (the newest
 *   marker is for its new hash) joins that activation, and with it the
 *   rollbacks already announced: instance 2 reloading a moment after instance 1;
 * - an instance that reloads a config which is not the newest marker's starts a
 *   new activation (A → B → A: A's old rollbacks do not come back);
 * - an instance serving a hash for which a newer activation is announced (it
 *   never saw the intermediate config) joins it, back at the configured weights;
 * - an instance that starts (not a change) joins the newest activation of its hash.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics/index.js'
import type { Store } from '../store/index.js'
import { createRollbackTracker, type RollbackTracker } from './rollback.js'
import type { CompiledRoute, CompiledUpstream, RouteTable } from './routes.js'
import type { UpstreamOutcome } from './types.js'

/** Rollback announcements outlive any sane rollout; a new activation ends them sooner. */
const ANNOUNCE_TTL_MS = 7 * 86_400_000
// 1 h: each instance re-announces its activation marker, so it outlives the announcement TTL while in use
const MARKER_REFRESH_MS = 3_600_000

interface Installed {
  /** Hash of the config file's bytes (not of the key files): a key rotation is not a config change here. */
  readonly fileHash: string
  readonly routes: RouteTable
}

export interface CanaryControl {
  /**
   * Start tracking a snapshot (fresh windows, configured weights, the rollbacks
   * in force for its activation). `change`: applied by a reload with new content
   * (true) or at start (false).
   */
  install: (snap: Installed, change: boolean) => void
  /** Record one forwarded request's outcome. */
  record: (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome) => void
  /** The current activation epoch ('' before any was announced for this config). */
  epoch: () => string
  /** Stop the marker refresh (shutdown). */
  close: () => void
}

/** A parsed announcement: an activation marker (no route) or a rollback. */
interface Announcement {
  hash: string
  epoch: string
  route?: string
  upstream?: string
}

function parseKey (key: string): Announcement | undefined {
  const slash = key.indexOf('/')
  const head = slash === -1 ? key : key.slice(0, slash)
  const at = head.indexOf('@')
  const hash = at === -1 ? head : head.slice(0, at)
  const epoch = at === -1 ? '' : head.slice(at + 1)
  if (slash === -1) return at === -1 ? undefined : { hash, epoch }
  const [route, upstream, extra] = key.slice(slash + 1).split('/')
  if (route === undefined || upstream === undefined || extra !== undefined) return undefined
  return { hash, epoch, route, upstream }
}

/** Epochs are `<ms>-<random>`: ordered by the time, then the text; '' (no activation announced) first. */
function newer (a: string, b: string): boolean {
  const ta = a === '' ? -1 : Number(a.slice(0, a.indexOf('-')))
  const tb = b === '' ? -1 : Number(b.slice(0, b.indexOf('-')))
  return ta !== tb ? ta > tb : a > b
}

export function createCanaryControl (opts: { store: Store, metrics: Metrics, logger: Logger }): CanaryControl {
  const { store, metrics, logger } = opts
  // Per route object (so per snapshot): its tracker and the snapshot it belongs to.
  const trackers = new WeakMap<CompiledRoute, { tracker: RollbackTracker, snap: Installed }>()
  // The activation served now. Set by install before any traffic.
  let active: { snap: Installed, epoch: string } | undefined
  let stamp = 0

  const publishWeights = (route: CompiledRoute) => {
    const weights = route.picker.weights
    route.upstreams.forEach((u, i) => metrics.upstreamWeight.set({ route: route.name, upstream: u.name }, weights[i]))
  }

  const head = (hash: string, epoch: string) => epoch === '' ? hash : `${hash}@${epoch}`

  const announce = (key: string, what: Record<string, unknown>) => {
    store.announceRollback(key, Date.now() + ANNOUNCE_TTL_MS).catch((err: unknown) => {
      logger.error({ err, ...what }, 'could not announce to other instances through the store')
    })
  }

  const announceMarker = () => {
    if (active !== undefined && active.epoch !== '') announce(head(active.snap.fileHash, active.epoch), { activation: active.epoch })
  }
  const refresher = setInterval(announceMarker, MARKER_REFRESH_MS)
  refresher.unref()

  /** Fresh trackers for the snapshot's watched upstreams. */
  const track = (snap: Installed) => {
    for (const route of snap.routes.routes) {
      const rb = route.config.canary?.rollback
      const watched = route.rollbackUpstream
      if (rb === undefined || watched === undefined) continue
      trackers.set(route, { tracker: createRollbackTracker({ errorRate: rb.errorRate, windowMs: rb.window, minRequests: rb.minRequests }), snap })
      // Present from the start (at 0), so increase() sees the first rollback.
      metrics.canaryRollbacks.inc({ route: route.name, upstream: watched.name }, 0)
    }
  }

  const apply = (snap: Installed, route: CompiledRoute, upstream: CompiledUpstream, source: 'local' | 'announced'): void => {
    // An outcome of a request still running on a replaced snapshot says nothing about the config in force.
    if (active === undefined || active.snap !== snap) return
    if (!route.rollBack(upstream.index)) return
    metrics.canaryRollbacks.inc({ route: route.name, upstream: upstream.name })
    publishWeights(route)
    const stats = trackers.get(route)?.tracker.stats()
    logger.warn({ route: route.name, upstream: upstream.name, source, window: stats, weights: route.picker.weights },
      'canary rolled back: effective weight is now 0 until the config changes')
    if (source === 'local') {
      announce(`${head(snap.fileHash, active.epoch)}/${route.name}/${upstream.name}`, { route: route.name, upstream: upstream.name })
      announceMarker() // the marker lives at least as long as the rollbacks under it
    }
  }

  /** Apply the rollbacks announced for the active snapshot and epoch. */
  const applyInForce = () => {
    for (const key of store.rollbacks()) onAnnounced(key)
  }

  const onAnnounced = (key: string): void => {
    if (active === undefined) return
    const a = parseKey(key)
    if (a === undefined || a.hash !== active.snap.fileHash) return
    if (a.route === undefined) {
      // A newer activation of the config this instance serves: join it, at the configured weights.
      if (!newer(a.epoch, active.epoch)) return
      const from = active.epoch
      active = { snap: active.snap, epoch: a.epoch }
      const restored: string[] = []
      for (const route of active.snap.routes.routes) {
        if (route.restore()) restored.push(route.name)
        publishWeights(route)
      }
      track(active.snap)
      logger.info({ hash: active.snap.fileHash, from, to: a.epoch, restored },
        restored.length > 0 ? 'config re-applied elsewhere: rollbacks of the earlier activation ended' : 'joined the config activation')
      applyInForce()
      return
    }
    if (a.epoch !== active.epoch) return
    // A newer activation of this config may be in the same batch (a resync at start): join it first.
    const newest = newestMarker(active.snap.fileHash)
    if (newest !== undefined && newer(newest.epoch, active.epoch)) {
      onAnnounced(head(newest.hash, newest.epoch))
      return
    }
    const route = active.snap.routes.get(a.route)
    const upstream = route?.upstreams.find((u) => u.name === a.upstream)
    if (route !== undefined && upstream !== undefined) apply(active.snap, route, upstream, 'announced')
  }
  store.onRollback(onAnnounced)

  /** The newest activation marker announced, for `hash` or (undefined) for any config. */
  const newestMarker = (hash: string | undefined): Announcement | undefined => {
    let best: Announcement | undefined
    for (const key of store.rollbacks()) {
      const a = parseKey(key)
      if (a === undefined || a.route !== undefined || (hash !== undefined && a.hash !== hash)) continue
      if (best === undefined || newer(a.epoch, best.epoch)) best = a
    }
    return best
  }

  return {
    install (snap, change) {
      metrics.upstreamWeight.reset()
      for (const route of snap.routes.routes) publishWeights(route)
      track(snap)
      let epoch: string
      if (change) {
        const newest = newestMarker(undefined)
        if (newest !== undefined && newest.hash === snap.fileHash) {
          epoch = newest.epoch // another instance already applied this change: share its activation
        } else {
          // Monotonic per instance, so two quick reloads never mint epochs in the wrong order.
          stamp = Math.max(Date.now(), stamp + 1)
          epoch = `${stamp}-${randomBytes(4).toString('hex')}`
        }
      } else {
        epoch = newestMarker(snap.fileHash)?.epoch ?? ''
      }
      active = { snap, epoch }
      announceMarker()
      applyInForce()
    },
    record (route, upstream, outcome) {
      if (route.rollbackUpstream !== upstream) return
      const t = trackers.get(route)
      if (t !== undefined && t.tracker.record(outcome === 'error')) apply(t.snap, route, upstream, 'local')
    },
    epoch: () => active?.epoch ?? '',
    close () {
      clearInterval(refresher)
    }
  }
}
