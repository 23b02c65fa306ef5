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
  const c = new Canary(opts.store, opts.metrics, opts.logger)
  // Bound: record is handed to the forwarding paths as a plain callback.
  return {
    install: (snap, change) => { c.install(snap, change) },
    record: (route, upstream, outcome) => { c.record(route, upstream, outcome) },
    epoch: () => c.epoch(),
    close: () => { c.close() }
  }
}

/** The state behind a CanaryControl: trackers per route object (so per snapshot) and the activation served now. */
class Canary {
  // Per route object: its tracker and the snapshot it belongs to.
  private readonly trackers = new WeakMap<CompiledRoute, { tracker: RollbackTracker, snap: Installed }>()
  // The activation served now. Set by install before any traffic.
  private active: { snap: Installed, epoch: string } | undefined
  private stamp = 0
  private readonly refresher: NodeJS.Timeout

  constructor (private readonly store: Store, private readonly metrics: Metrics, private readonly logger: Logger) {
    this.refresher = setInterval(() => { this.announceMarker() }, MARKER_REFRESH_MS)
    this.refresher.unref()
    store.onRollback((key) => { this.onAnnounced(key) })
  }

  install (snap: Installed, change: boolean): void {
    this.metrics.upstreamWeight.reset()
    for (const route of snap.routes.routes) this.publishWeights(route)
    this.track(snap)
    let epoch: string
    if (change) {
      const newest = this.newestMarker(undefined)
      if (newest !== undefined && newest.hash === snap.fileHash) {
        epoch = newest.epoch // another instance already applied this change: share its activation
      } else {
        // Monotonic per instance, so two quick reloads never mint epochs in the wrong order.
        this.stamp = Math.max(Date.now(), this.stamp + 1)
        epoch = `${this.stamp}-${randomBytes(4).toString('hex')}`
      }
    } else {
      epoch = this.newestMarker(snap.fileHash)?.epoch ?? ''
    }
    this.active = { snap, epoch }
    this.announceMarker()
    this.applyInForce()
  }

  record (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome): void {
    if (route.rollbackUpstream !== upstream) return
    const t = this.trackers.get(route)
    if (t !== undefined && t.tracker.record(outcome === 'error')) this.apply(t.snap, route, upstream, 'local')
  }

  epoch (): string { return this.active?.epoch ?? '' }

  close (): void { clearInterval(this.refresher) }

  private publishWeights (route: CompiledRoute): void {
    const weights = route.picker.weights
    route.upstreams.forEach((u, i) => this.metrics.upstreamWeight.set({ route: route.name, upstream: u.name }, weights[i]))
  }

  private announce (key: string, what: Record<string, unknown>): void {
    this.store.announceRollback(key, Date.now() + ANNOUNCE_TTL_MS).catch((err: unknown) => {
      this.logger.error({ err, ...what }, 'could not announce to other instances through the store')
    })
  }

  private announceMarker (): void {
    const active = this.active
    if (active !== undefined && active.epoch !== '') this.announce(head(active.snap.fileHash, active.epoch), { activation: active.epoch })
  }

  /** Fresh trackers for the snapshot's watched upstreams. */
  private track (snap: Installed): void {
    for (const route of snap.routes.routes) {
      const rb = route.config.canary?.rollback
      const watched = route.rollbackUpstream
      if (rb === undefined || watched === undefined) continue
      this.trackers.set(route, { tracker: createRollbackTracker({ errorRate: rb.errorRate, windowMs: rb.window, minRequests: rb.minRequests }), snap })
      // Present from the start (at 0), so increase() sees the first rollback.
      this.metrics.canaryRollbacks.inc({ route: route.name, upstream: watched.name }, 0)
    }
  }

  private apply (snap: Installed, route: CompiledRoute, upstream: CompiledUpstream, source: 'local' | 'announced'): void {
    // An outcome of a request still running on a replaced snapshot says nothing about the config in force.
    const active = this.active
    if (active === undefined || active.snap !== snap) return
    if (!route.rollBack(upstream.index)) return
    this.metrics.canaryRollbacks.inc({ route: route.name, upstream: upstream.name })
    this.publishWeights(route)
    const stats = this.trackers.get(route)?.tracker.stats()
    this.logger.warn({ route: route.name, upstream: upstream.name, source, window: stats, weights: route.picker.weights },
      'canary rolled back: effective weight is now 0 until the config changes')
    if (source === 'local') {
      this.announce(`${head(snap.fileHash, active.epoch)}/${route.name}/${upstream.name}`, { route: route.name, upstream: upstream.name })
      this.announceMarker() // the marker lives at least as long as the rollbacks under it
    }
  }

  /** Apply the rollbacks announced for the active snapshot and epoch. */
  private applyInForce (): void {
    for (const key of this.store.rollbacks()) this.onAnnounced(key)
  }

  private onAnnounced (key: string): void {
    const active = this.active
    if (active === undefined) return
    const a = parseKey(key)
    if (a === undefined || a.hash !== active.snap.fileHash) return
    if (a.route === undefined) {
      if (newer(a.epoch, active.epoch)) this.join(a.epoch)
      return
    }
    if (a.epoch !== active.epoch) return
    // A newer activation of this config may be in the same batch (a resync at start): join it first.
    const newest = this.newestMarker(active.snap.fileHash)
    if (newest !== undefined && newer(newest.epoch, active.epoch)) {
      this.onAnnounced(head(newest.hash, newest.epoch))
      return
    }
    const route = active.snap.routes.get(a.route)
    const upstream = route?.upstreams.find((u) => u.name === a.upstream)
    if (route !== undefined && upstream !== undefined) this.apply(active.snap, route, upstream, 'announced')
  }

  /** A newer activation of the config this instance serves: join it, at the configured weights. */
  private join (epoch: string): void {
    const snap = this.active!.snap
    const from = this.active!.epoch
    this.active = { snap, epoch }
    const restored: string[] = []
    for (const route of snap.routes.routes) {
      if (route.restore()) restored.push(route.name)
      this.publishWeights(route)
    }
    this.track(snap)
    this.logger.info({ hash: snap.fileHash, from, to: epoch, restored },
      restored.length > 0 ? 'config re-applied elsewhere: rollbacks of the earlier activation ended' : 'joined the config activation')
    this.applyInForce()
  }

  /** The newest activation marker announced, for `hash` or (undefined) for any config. */
  private newestMarker (hash: string | undefined): Announcement | undefined {
    let best: Announcement | undefined
    for (const key of this.store.rollbacks()) {
      const a = parseKey(key)
      if (a === undefined || a.route !== undefined || (hash !== undefined && a.hash !== hash)) continue
      if (best === undefined || newer(a.epoch, best.epoch)) best = a
    }
    return best
  }
}

function head (hash: string, epoch: string): string {
  return epoch === '' ? hash : `${hash}@${epoch}`
}
