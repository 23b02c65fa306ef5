/**
 * The automatic ramp, wired: one ramp per route with `canary.ramp`, shared by
 * every instance through the store's RolloutPort. Every instance counts the
 * requests it forwards (ramp-window.ts), reports its window of the current
 * step to the store and applies the shared ramp's share to the route's picker;
 * the instance holding the route's lease sums every instance's reports, judges
 * the step (ramp.ts) and writes the outcome (compare-and-set, so an SRE's
 * command at the same moment is never lost). An abort is today's rollback:
 * the canary's weight drops to 0 on every instance (each one reads the record
 * at its next tick), logged, counted, alerted on.
 *
 * A ramp's identity is a hash of the route's upstreams and ramp settings: a
 * file edit of those starts a new ramp when the instance installs it; any other
 * edit keeps the running one. An instance that starts or reloads onto a ramp
 * already running joins it at its current step before it serves.
 *
 * The parts: `SharedRamps` (the records, reports and leases in the store),
 * `RampEntry` (one route's ramp on this instance: its window, the weights it
 * applies, its metrics) and `Rollouts` (the entries of the installed route
 * table, run one operation at a time: install, tick, status, command).
 */
import { createHash, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import type { RampConfig } from '../config/schema.js'
import { GatewayError } from '../errors.js'
import type { Metrics } from '../metrics/index.js'
import type { RolloutPort } from '../store/index.js'
import { analyse, command, decide, shareOf, startRamp, weightsFor, type Analysis, type Ramp, type RampCommand, type RampState } from './ramp.js'
import { emptyWindow, observe, sumReports, type StepWindow } from './ramp-window.js'
import type { CompiledRoute, CompiledUpstream, RouteTable } from './routes.js'
import type { UpstreamOutcome } from './types.js'

/** A finished ramp stays readable this long; a running one is rewritten at every decision. */
const RECORD_TTL_MS = 30 * 86_400_000
const LEASE_TTL_MS = 5_000
const STATES: readonly RampState[] = ['running', 'paused', 'aborted', 'promoted']
// compare-and-set attempts before an operation gives up (another writer kept winning)
const CAS_ATTEMPTS = 5

export interface RolloutStatus {
  route: string
  state: RampState
  /** 1-based step number and the steps' count. */
  step: number
  steps: number
  share: number
  reason: string
  /** Time in the current step (ms). */
  inStep: number
  analysis: Analysis
  /** False when the stored ramp belongs to another version of the file than this instance's. */
  current: boolean
}

export interface RolloutControl {
  /** Start tracking a route table (at start and after every reload); resolves once each ramp is joined or started. */
  install: (routes: RouteTable) => Promise<void>
  /** Count one forwarded request of a ramped route (duration: to the upstream's response headers, ms). */
  record: (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome, ms?: number) => void
  /** Report, read, and (lease holder) decide, for every ramp. Runs one at a time. */
  tick: () => Promise<void>
  status: () => Promise<RolloutStatus[]>
  command: (route: string, cmd: RampCommand) => Promise<RolloutStatus>
  /** Stop the timer and hand the leases on. */
  close: () => Promise<void>
}

export interface RolloutOptions {
  store: RolloutPort
  metrics: Metrics
  logger: Logger
  now: () => number
  /** Real-time period of the background tick (ms); 0: none (tests call tick()). */
  tickMs?: number
  /** This instance's name in the reports and the lease (default host:pid:random). */
  instance?: string
}

const windowKey = (r: Ramp): string => `${r.id}:${r.step}:${r.startedAt}`
const live = (r: Ramp | undefined): boolean => r?.state === 'running' || r?.state === 'paused'

export function rampId (route: CompiledRoute): string {
  const c = route.config
  return createHash('sha256').update(JSON.stringify({ route: c.name, upstreams: c.upstreams, ramp: c.canary?.ramp })).digest('hex').slice(0, 16)
}

export function createRolloutControl (opts: RolloutOptions): RolloutControl {
  const r = new Rollouts(opts)
  // Bound: record is handed to the forwarding paths as a plain callback.
  return {
    install: async (routes) => { await r.install(routes) },
    record: (route, upstream, outcome, ms) => { r.record(route, upstream, outcome, ms) },
    tick: async () => { await r.tick() },
    status: async () => await r.status(),
    command: async (route, cmd) => await r.command(route, cmd),
    close: async () => { await r.close() }
  }
}

/** A stored ramp as read: undefined when none (or unreadable), with the version to write over. */
interface Stored { ramp: Ramp | undefined, version: number }

/** The routes' shared ramps in the store: records (versioned), this instance's reports, the deciding lease. */
class SharedRamps {
  constructor (private readonly store: RolloutPort, private readonly me: string) {}

  async read (route: string): Promise<Stored> {
    const rec = await this.store.getRollout(route)
    if (rec === null) return { ramp: undefined, version: 0 }
    try {
      return { ramp: JSON.parse(rec.value) as Ramp, version: rec.version }
    } catch {
      return { ramp: undefined, version: rec.version }
    }
  }

  /** Compare-and-set: false when the record is no longer at `version`. */
  async write (route: string, version: number, ramp: Ramp): Promise<boolean> {
    return await this.store.putRollout(route, version, JSON.stringify(ramp), RECORD_TTL_MS)
  }

  async report (route: string, key: string, window: StepWindow): Promise<void> {
    await this.store.reportRollout(route, key, this.me, JSON.stringify(window), RECORD_TTL_MS)
  }

  /** Every instance's reports of the step `key`, summed. */
  async sum (route: string, key: string): Promise<StepWindow> {
    return sumReports(await this.store.rolloutReports(route, key))
  }

  async lease (route: string): Promise<boolean> {
    return await this.store.leaseRollout(route, this.me, LEASE_TTL_MS)
  }

  /** Hand the lease on: the next instance to ask takes it at once. */
  async release (route: string): Promise<void> {
    await this.store.leaseRollout(route, this.me, 1)
  }
}

/** One route's ramp on this instance: the shared ramp as last read, this step's counts, the weights it applies. */
class RampEntry {
  /** The shared ramp as last read (undefined: another file version's, or not read yet). */
  ramp: Ramp | undefined = undefined
  version = 0
  /** This instance's counts for `windowKey`. */
  window: StepWindow = emptyWindow()
  windowKey = ''
  canaryIndex: number

  constructor (public route: CompiledRoute, public settings: RampConfig, readonly id: string, private readonly metrics: Metrics) {
    this.canaryIndex = route.picker.canaryIndex
  }

  get name (): string { return this.route.name }

  /** The same ramp on a reloaded route table: keep its state and this step's counts. */
  moveTo (route: CompiledRoute, settings: RampConfig): void {
    this.route = route
    this.settings = settings
    this.canaryIndex = route.picker.canaryIndex
  }

  /** Take a record read from the store; a new window starts with a new step. */
  adopt (ramp: Ramp, version: number): void {
    if (this.ramp === undefined || windowKey(this.ramp) !== windowKey(ramp)) {
      this.window = emptyWindow()
      this.windowKey = windowKey(ramp)
    }
    this.ramp = ramp
    this.version = version
    this.apply()
  }

  share (ramp: Ramp): number { return shareOf(this.settings, ramp) }

  record (upstream: CompiledUpstream, error: boolean, ms: number): void {
    observe(upstream.index === this.canaryIndex ? this.window.canary : this.window.stable, error, ms)
  }

  publishAnalysis (a: Analysis): void {
    for (const role of ['canary', 'stable'] as const) {
      this.metrics.rolloutRequests.set({ route: this.name, role }, a[role].requests)
      this.metrics.rolloutErrors.set({ route: this.name, role }, a[role].errors)
      this.metrics.rolloutP99.set({ route: this.name, role }, (a[role].p99 ?? 0) / 1000)
    }
  }

  /** The ramp's share on the route's picker, and in the metrics. */
  private apply (): void {
    const r = this.ramp
    if (r === undefined) return
    const { metrics, name, route } = this
    const share = this.share(r)
    route.useWeights(weightsFor(route.picker.configuredWeights, this.canaryIndex, share))
    metrics.rolloutShare.set({ route: name }, share)
    metrics.rolloutStep.set({ route: name }, r.step + 1)
    for (const s of STATES) metrics.rolloutState.set({ route: name, state: s }, s === r.state ? 1 : 0)
    const weights = route.picker.weights
    route.upstreams.forEach((u, i) => metrics.upstreamWeight.set({ route: name, upstream: u.name }, weights[i]))
  }
}

/** The ramps of the installed route table; install, tick and command run one at a time. */
class Rollouts {
  private entries = new Map<string, RampEntry>()
  private chain: Promise<void> = Promise.resolve()
  private readonly shared: SharedRamps
  private readonly metrics: Metrics
  private readonly logger: Logger
  private readonly now: () => number
  private readonly timer: NodeJS.Timeout | undefined

  constructor (opts: RolloutOptions) {
    this.metrics = opts.metrics
    this.logger = opts.logger
    this.now = opts.now
    this.shared = new SharedRamps(opts.store, opts.instance ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`)
    const tickMs = opts.tickMs ?? 1000
    this.timer = tickMs > 0 ? setInterval(() => { this.tick().catch(() => {}) }, tickMs) : undefined
    this.timer?.unref()
  }

  install (routes: RouteTable): Promise<void> {
    return this.serial(async () => {
      const next = new Map<string, RampEntry>()
      for (const route of routes.routes) {
        const settings = route.config.canary?.ramp
        if (settings === undefined) continue
        const id = rampId(route)
        const old = this.entries.get(route.name)
        let e: RampEntry
        if (old?.id === id) {
          e = old
          e.moveTo(route, settings)
        } else {
          e = new RampEntry(route, settings, id, this.metrics)
        }
        next.set(route.name, e)
      }
      this.entries = next
      for (const e of next.values()) {
        try {
          await this.join(e)
        } catch (err) {
          this.logger.error({ err, route: e.name }, 'rollout: could not read the ramp from the store; serving the configured weights until the next tick')
        }
      }
    })
  }

  record (route: CompiledRoute, upstream: CompiledUpstream, outcome: UpstreamOutcome, ms = 0): void {
    const e = this.entries.get(route.name)
    if (e === undefined || e.route !== route || !live(e.ramp)) return
    e.record(upstream, outcome === 'error', ms)
  }

  tick (): Promise<void> {
    return this.serial(async () => {
      for (const e of this.entries.values()) {
        try {
          await this.tickOne(e)
        } catch (err) {
          this.logger.error({ err, route: e.name }, 'rollout: could not sync the ramp with the store; trying again at the next tick')
        }
      }
    })
  }

  async status (): Promise<RolloutStatus[]> {
    return await Promise.all([...this.entries.values()].map(async (e) => await this.statusOf(e)))
  }

  command (name: string, cmd: RampCommand): Promise<RolloutStatus> {
    return this.serial(async () => {
      const e = this.entries.get(name)
      if (e === undefined) throw new GatewayError('ROLLOUT_UNKNOWN', { data: { route: name } })
      for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
        const { ramp, version } = await this.shared.read(name)
        if (ramp?.id !== e.id) throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: 'the running ramp belongs to another version of the config file' } })
        let next: Ramp
        try {
          next = command(e.settings, ramp, cmd, this.now())
        } catch (err) {
          throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: (err as Error).message } })
        }
        if (await this.shared.write(name, version, next)) {
          e.adopt(next, version + 1)
          this.metrics.rolloutDecisions.inc({ route: name, action: cmd })
          this.logger.warn({ route: name, command: cmd, state: next.state, share: e.share(next), step: next.step + 1 }, `rollout: ${cmd} by an operator`)
          return await this.statusOf(e)
        }
      }
      throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: 'the ramp kept changing; try again' } })
    })
  }

  async close (): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer)
    await this.chain
    await Promise.allSettled([...this.entries.values()].map(async (e) => await this.shared.release(e.name)))
  }

  private serial<T> (fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn)
    this.chain = run.then(() => {}, () => {})
    return run
  }

  /** Join the route's ramp, or start one when the stored ramp is another file version's (or none). */
  private async join (e: RampEntry): Promise<void> {
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const { ramp, version } = await this.shared.read(e.name)
      if (ramp?.id === e.id) {
        e.adopt(ramp, version)
        this.logger.info({ route: e.name, state: ramp.state, step: ramp.step + 1, share: e.share(ramp) }, 'rollout: joined the running ramp')
        return
      }
      const fresh = startRamp(e.id, this.now())
      if (await this.shared.write(e.name, version, fresh)) {
        e.adopt(fresh, version + 1)
        this.metrics.rolloutDecisions.inc({ route: e.name, action: 'start' })
        this.logger.info({ route: e.name, steps: e.settings.steps, interval: e.settings.interval, share: e.share(fresh) }, 'rollout: ramp started')
        return
      }
    }
  }

  private async tickOne (e: RampEntry): Promise<void> {
    if (live(e.ramp)) await this.shared.report(e.name, e.windowKey, e.window)
    const { ramp, version } = await this.shared.read(e.name)
    if (ramp === undefined || (e.ramp === undefined && ramp.id !== e.id && e.version === 0)) {
      // None stored (or the store was unreachable when this config was installed): join or start it now.
      await this.join(e)
      return
    }
    if (ramp.id !== e.id) {
      e.ramp = undefined // another file version's ramp: this instance keeps its weights and decides nothing
      return
    }
    if (version !== e.version) e.adopt(ramp, version)
    await this.judge(e)
  }

  /** The lease holder judges a running ramp's step on every instance's reports and writes the outcome. */
  private async judge (e: RampEntry): Promise<void> {
    const ramp = e.ramp
    if (ramp?.state !== 'running' || !await this.shared.lease(e.name)) return
    const d = decide(e.settings, ramp, await this.shared.sum(e.name, e.windowKey), this.now())
    e.publishAnalysis(d.analysis)
    if (d.action === 'wait') return
    if (!await this.shared.write(e.name, e.version, d.ramp)) return // changed meanwhile: next tick
    const from = e.share(ramp)
    e.adopt(d.ramp, e.version + 1)
    this.metrics.rolloutDecisions.inc({ route: e.name, action: d.action })
    const line = { route: e.name, action: d.action, from, share: e.share(d.ramp), step: d.ramp.step + 1, reason: d.reason, analysis: d.analysis }
    if (d.action === 'abort') this.logger.warn(line, 'rollout aborted: canary rolled back to weight 0 until the config changes')
    else if (d.action === 'promote') this.logger.warn(line, 'rollout promoted: the canary takes its final share; promote the file now')
    else this.logger.info(line, 'rollout advanced')
  }

  private async statusOf (e: RampEntry): Promise<RolloutStatus> {
    // This instance's counts so far go in with the others' last reports.
    if (live(e.ramp)) await this.shared.report(e.name, e.windowKey, e.window)
    const { ramp } = await this.shared.read(e.name)
    const now = this.now()
    const r = ramp ?? e.ramp ?? startRamp(e.id, now)
    const sum = live(r) ? await this.shared.sum(e.name, windowKey(r)) : sumReports([])
    return {
      route: e.name,
      state: r.state,
      step: r.step + 1,
      steps: e.settings.steps.length,
      share: e.share(r),
      reason: r.reason,
      inStep: now - r.startedAt,
      // A finished ramp shows the numbers it was decided on; a live one its current step's.
      analysis: live(r) ? analyse(r, sum, now) : (r.last ?? analyse(r, sum, now)),
      current: r.id === e.id
    }
  }
}
