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

interface Entry {
  route: CompiledRoute
  settings: RampConfig
  id: string
  canaryIndex: number
  /** The shared ramp as last read (undefined: another file version's, or not read yet). */
  ramp: Ramp | undefined
  version: number
  /** This instance's counts for `windowKey`. */
  window: StepWindow
  windowKey: string
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
  const { store, metrics, logger, now } = opts
  const me = opts.instance ?? `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`
  let entries = new Map<string, Entry>()
  let chain: Promise<void> = Promise.resolve()
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn)
    chain = run.then(() => {}, () => {})
    return run
  }

  const apply = (e: Entry): void => {
    const r = e.ramp
    if (r === undefined) return
    const share = shareOf(e.settings, r)
    e.route.useWeights(weightsFor(e.route.picker.configuredWeights, e.canaryIndex, share))
    const name = e.route.name
    metrics.rolloutShare.set({ route: name }, share)
    metrics.rolloutStep.set({ route: name }, r.step + 1)
    for (const s of STATES) metrics.rolloutState.set({ route: name, state: s }, s === r.state ? 1 : 0)
    const weights = e.route.picker.weights
    e.route.upstreams.forEach((u, i) => metrics.upstreamWeight.set({ route: name, upstream: u.name }, weights[i]))
  }

  /** Take a record read from the store; a new window starts with a new step. */
  const adopt = (e: Entry, ramp: Ramp, version: number): void => {
    if (e.ramp === undefined || windowKey(e.ramp) !== windowKey(ramp)) {
      e.window = emptyWindow()
      e.windowKey = windowKey(ramp)
    }
    e.ramp = ramp
    e.version = version
    apply(e)
  }

  const read = async (e: Entry): Promise<{ ramp: Ramp | undefined, version: number }> => {
    const rec = await store.getRollout(e.route.name)
    if (rec === null) return { ramp: undefined, version: 0 }
    try {
      return { ramp: JSON.parse(rec.value) as Ramp, version: rec.version }
    } catch {
      return { ramp: undefined, version: rec.version }
    }
  }

  /** Join the route's ramp, or start one when the stored ramp is another file version's (or none). */
  const join = async (e: Entry): Promise<void> => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const { ramp, version } = await read(e)
      if (ramp?.id === e.id) {
        adopt(e, ramp, version)
        logger.info({ route: e.route.name, state: ramp.state, step: ramp.step + 1, share: shareOf(e.settings, ramp) }, 'rollout: joined the running ramp')
        return
      }
      const fresh = startRamp(e.id, now())
      if (await store.putRollout(e.route.name, version, JSON.stringify(fresh), RECORD_TTL_MS)) {
        adopt(e, fresh, version + 1)
        metrics.rolloutDecisions.inc({ route: e.route.name, action: 'start' })
        logger.info({ route: e.route.name, steps: e.settings.steps, interval: e.settings.interval, share: shareOf(e.settings, fresh) }, 'rollout: ramp started')
        return
      }
    }
  }

  const judge = async (e: Entry): Promise<void> => {
    const ramp = e.ramp
    if (ramp?.state !== 'running' || !await store.leaseRollout(e.route.name, me, LEASE_TTL_MS)) return
    const reports = await store.rolloutReports(e.route.name, e.windowKey)
    const sum = sumReports(reports)
    const d = decide(e.settings, ramp, sum, now())
    publishAnalysis(e.route.name, d.analysis)
    if (d.action === 'wait') return
    if (!await store.putRollout(e.route.name, e.version, JSON.stringify(d.ramp), RECORD_TTL_MS)) return // changed meanwhile: next tick
    const from = shareOf(e.settings, ramp)
    adopt(e, d.ramp, e.version + 1)
    metrics.rolloutDecisions.inc({ route: e.route.name, action: d.action })
    const line = { route: e.route.name, action: d.action, from, share: shareOf(e.settings, d.ramp), step: d.ramp.step + 1, reason: d.reason, analysis: d.analysis }
    if (d.action === 'abort') logger.warn(line, 'rollout aborted: canary rolled back to weight 0 until the config changes')
    else if (d.action === 'promote') logger.warn(line, 'rollout promoted: the canary takes its final share; promote the file now')
    else logger.info(line, 'rollout advanced')
  }

  const publishAnalysis = (route: string, a: Analysis): void => {
    for (const role of ['canary', 'stable'] as const) {
      metrics.rolloutRequests.set({ route, role }, a[role].requests)
      metrics.rolloutErrors.set({ route, role }, a[role].errors)
      metrics.rolloutP99.set({ route, role }, (a[role].p99 ?? 0) / 1000)
    }
  }

  const tickOne = async (e: Entry): Promise<void> => {
    if (live(e.ramp)) await store.reportRollout(e.route.name, e.windowKey, me, JSON.stringify(e.window), RECORD_TTL_MS)
    const { ramp, version } = await read(e)
    if (ramp === undefined || (e.ramp === undefined && ramp.id !== e.id && e.version === 0)) {
      // None stored (or the store was unreachable when this config was installed): join or start it now.
      await join(e)
      return
    }
    if (ramp.id !== e.id) {
      e.ramp = undefined // another file version's ramp: this instance keeps its weights and decides nothing
      return
    }
    if (version !== e.version) adopt(e, ramp, version)
    await judge(e)
  }

  const tick = (): Promise<void> => serial(async () => {
    for (const e of entries.values()) {
      try {
        await tickOne(e)
      } catch (err) {
        logger.error({ err, route: e.route.name }, 'rollout: could not sync the ramp with the store; trying again at the next tick')
      }
    }
  })

  const statusOf = async (e: Entry): Promise<RolloutStatus> => {
    // This instance's counts so far go in with the others' last reports.
    if (live(e.ramp)) await store.reportRollout(e.route.name, e.windowKey, me, JSON.stringify(e.window), RECORD_TTL_MS)
    const { ramp } = await read(e)
    const r = ramp ?? e.ramp ?? startRamp(e.id, now())
    const reports = live(r) ? await store.rolloutReports(e.route.name, windowKey(r)) : []
    const sum = sumReports(reports)
    return {
      route: e.route.name,
      state: r.state,
      step: r.step + 1,
      steps: e.settings.steps.length,
      share: shareOf(e.settings, r),
      reason: r.reason,
      inStep: now() - r.startedAt,
      // A finished ramp shows the numbers it was decided on; a live one its current step's.
      analysis: live(r) ? analyse(r, sum, now()) : (r.last ?? analyse(r, sum, now())),
      current: r.id === e.id
    }
  }

  const timer = (opts.tickMs ?? 1000) > 0 ? setInterval(() => { tick().catch(() => {}) }, opts.tickMs ?? 1000) : undefined
  timer?.unref()

  return {
    install: (routes) => serial(async () => {
      const next = new Map<string, Entry>()
      for (const route of routes.routes) {
        const settings = route.config.canary?.ramp
        if (settings === undefined) continue
        const id = rampId(route)
        const old = entries.get(route.name)
        const e: Entry = old?.id === id
          ? { ...old, route, settings } // the same ramp: keep its state and this step's counts
          : { route, settings, id, canaryIndex: route.picker.canaryIndex, ramp: undefined, version: 0, window: emptyWindow(), windowKey: '' }
        e.canaryIndex = route.picker.canaryIndex
        next.set(route.name, e)
      }
      entries = next
      for (const e of next.values()) {
        try {
          await join(e)
        } catch (err) {
          logger.error({ err, route: e.route.name }, 'rollout: could not read the ramp from the store; serving the configured weights until the next tick')
        }
      }
    }),
    record (route, upstream, outcome, ms = 0) {
      const e = entries.get(route.name)
      if (e === undefined || e.route !== route || !live(e.ramp)) return
      observe(upstream.index === e.canaryIndex ? e.window.canary : e.window.stable, outcome === 'error', ms)
    },
    tick,
    status: async () => await Promise.all([...entries.values()].map(statusOf)),
    command: (name, cmd) => serial(async () => {
      const e = entries.get(name)
      if (e === undefined) throw new GatewayError('ROLLOUT_UNKNOWN', { data: { route: name } })
      for (let attempt = 0; attempt < 5; attempt++) {
        const { ramp, version } = await read(e)
        if (ramp?.id !== e.id) throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: 'the running ramp belongs to another version of the config file' } })
        let next: Ramp
        try {
          next = command(e.settings, ramp, cmd, now())
        } catch (err) {
          throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: (err as Error).message } })
        }
        if (await store.putRollout(name, version, JSON.stringify(next), RECORD_TTL_MS)) {
          adopt(e, next, version + 1)
          metrics.rolloutDecisions.inc({ route: name, action: cmd })
          logger.warn({ route: name, command: cmd, state: next.state, share: shareOf(e.settings, next), step: next.step + 1 }, `rollout: ${cmd} by an operator`)
          return await statusOf(e)
        }
      }
      throw new GatewayError('ROLLOUT_CONFLICT', { data: { reason: 'the ramp kept changing; try again' } })
    }),
    close: async () => {
      if (timer !== undefined) clearInterval(timer)
      await chain
      // Hand the leases on: the next instance to ask takes them at once.
      await Promise.allSettled([...entries.values()].map(async (e) => await store.leaseRollout(e.route.name, me, 1)))
    }
  }
}
