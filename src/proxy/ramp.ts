/**
 * The ramp of one route as a pure state machine: no clock, no store, no
 * network. `decide` judges the current step on its window (summed over every
 * instance) and says what happens next, with the numbers it used; `command`
 * applies an SRE's pause / resume / promote / abort. src/proxy/rollout.ts runs
 * it: timers, the store, the picker's weights.
 *
 * A step advances when it has lasted `interval` and its analysis passes:
 * at least `minRequests` canary requests, the canary's error rate at most
 * `errorRate`, and its p99 at most `maxLatencyRatio` × the stable upstreams'
 * p99 over the same step (p99s under LATENCY_FLOOR_MS count as that floor, so
 * sub-millisecond noise never decides). Too many errors abort at once, whenever
 * the step has enough requests; latency is judged at the end of the interval.
 * Passing the last step promotes the canary; failing any step aborts the ramp
 * (the canary's share drops to 0).
 */
import type { RampConfig } from '../config/schema.js'
import { p99, type StepWindow } from './ramp-window.js'

export type RampState = 'running' | 'paused' | 'aborted' | 'promoted'
export type RampCommand = 'pause' | 'resume' | 'promote' | 'abort'
export type RampAction = 'wait' | 'advance' | 'abort' | 'promote'

/** Below this, a p99 counts as this much when latencies are compared (ms). */
export const LATENCY_FLOOR_MS = 25

/** A route's ramp as stored and shared by every instance. */
export interface Ramp {
  /** Identity of the configuration it runs (the route's upstreams and ramp settings): a file edit of those starts a new ramp. */
  id: string
  /** Index into `steps`. */
  step: number
  /** When the current step started (ms). */
  startedAt: number
  state: RampState
  /** Why it is in this state (the last decision or command). */
  reason: string
  /** The stable p99 (ms) of the last step that had stable traffic: the reference once the canary takes everything. */
  baselineP99?: number | undefined
  /** The numbers of the last decision (the step judged), kept with the record for status. */
  last?: Analysis | undefined
}

/** The numbers of one step's analysis. */
export interface Analysis {
  canary: { requests: number, errors: number, errorRate: number, p99: number | undefined }
  stable: { requests: number, errors: number, errorRate: number, p99: number | undefined }
  /** canary p99 / reference p99 (both floored), undefined without both. */
  latencyRatio: number | undefined
  /** Time in the step (ms). */
  elapsed: number
}

export interface Decision {
  action: RampAction
  reason: string
  /** The ramp after the decision (the same object when nothing changed). */
  ramp: Ramp
  analysis: Analysis
}

export function startRamp (id: string, now: number): Ramp {
  return { id, step: 0, startedAt: now, state: 'running', reason: 'started' }
}

/** The canary's share of traffic (percent) the ramp asks for. */
export function shareOf (settings: RampConfig, ramp: Ramp): number {
  if (ramp.state === 'aborted') return 0
  if (ramp.state === 'promoted') return settings.steps[settings.steps.length - 1]
  return settings.steps[Math.min(ramp.step, settings.steps.length - 1)]
}

/**
 * Effective weights (config order) giving the canary `share` percent: the
 * others split the rest in proportion to their configured weights (evenly if
 * those are all 0).
 */
export function weightsFor (configured: readonly number[], canaryIndex: number, share: number): number[] {
  const others = configured.reduce((sum, w, i) => (i === canaryIndex ? sum : sum + w), 0)
  const n = configured.length - 1
  return configured.map((w, i) => {
    if (i === canaryIndex) return share
    return (100 - share) * (others > 0 ? w / others : 1 / n)
  })
}

export function analyse (ramp: Ramp, window: StepWindow, now: number): Analysis {
  const side = (c: StepWindow['canary']) => ({ requests: c.requests, errors: c.errors, errorRate: c.requests > 0 ? c.errors / c.requests : 0, p99: p99(c) })
  const canary = side(window.canary)
  const stable = side(window.stable)
  const reference = stable.p99 ?? ramp.baselineP99
  const latencyRatio = canary.p99 === undefined || reference === undefined
    ? undefined
    : Math.max(canary.p99, LATENCY_FLOOR_MS) / Math.max(reference, LATENCY_FLOOR_MS)
  return { canary, stable, latencyRatio, elapsed: now - ramp.startedAt }
}

/** Judge the running step; only a running ramp moves. */
export function decide (settings: RampConfig, ramp: Ramp, window: StepWindow, now: number): Decision {
  const a = analyse(ramp, window, now)
  const wait = (reason: string): Decision => ({ action: 'wait', reason, ramp, analysis: a })
  if (ramp.state !== 'running') return wait(ramp.state)
  const enough = a.canary.requests >= settings.minRequests
  const stop = (reason: string): Decision =>
    ({ action: 'abort', reason, ramp: { ...ramp, state: 'aborted', reason, last: a }, analysis: a })
  if (enough && a.canary.errorRate > settings.errorRate) {
    return stop(`error rate ${fmt(a.canary.errorRate)} > ${settings.errorRate} at ${shareOf(settings, ramp)} %`)
  }
  if (a.elapsed < settings.interval) return wait('step interval not over')
  if (!enough) return wait(`${a.canary.requests} of ${settings.minRequests} canary requests`)
  if (a.latencyRatio !== undefined && a.latencyRatio > settings.maxLatencyRatio) {
    return stop(`canary p99 ${a.canary.p99} ms > ${settings.maxLatencyRatio} × stable p99 ${a.stable.p99 ?? ramp.baselineP99} ms at ${shareOf(settings, ramp)} %`)
  }
  const baselineP99 = a.stable.p99 ?? ramp.baselineP99
  if (ramp.step >= settings.steps.length - 1) {
    const reason = `passed the last step (${shareOf(settings, ramp)} %): promote the file now`
    return { action: 'promote', reason, ramp: { ...ramp, state: 'promoted', reason, baselineP99, last: a }, analysis: a }
  }
  const reason = `step ${shareOf(settings, ramp)} % passed`
  return { action: 'advance', reason, ramp: { ...ramp, step: ramp.step + 1, startedAt: now, reason, baselineP99, last: a }, analysis: a }
}

/** An SRE's command; a RangeError when it does not apply to the ramp's state. */
export function command (settings: RampConfig, ramp: Ramp, cmd: RampCommand, now: number): Ramp {
  const done = ramp.state === 'aborted' || ramp.state === 'promoted'
  switch (cmd) {
    case 'pause':
      if (ramp.state !== 'running') throw new RangeError(`cannot pause a ${ramp.state} ramp`)
      return { ...ramp, state: 'paused', reason: 'paused by an operator' }
    case 'resume':
      if (ramp.state !== 'paused') throw new RangeError(`cannot resume a ${ramp.state} ramp`)
      return { ...ramp, state: 'running', reason: 'resumed by an operator' }
    case 'promote':
      if (done) throw new RangeError(`cannot promote a ${ramp.state} ramp`)
      return { ...ramp, state: 'promoted', step: settings.steps.length - 1, startedAt: now, reason: 'promoted by an operator: promote the file now' }
    case 'abort':
      if (done) throw new RangeError(`cannot abort a ${ramp.state} ramp`)
      return { ...ramp, state: 'aborted', startedAt: now, reason: 'aborted by an operator' }
  }
}

const fmt = (n: number): string => String(Math.round(n * 10_000) / 10_000)
