/**
 * Weighted, sticky grey-release picker. Pure and deterministic: the answer is a
 * function of (upstreams, canary settings, effective weights, caller). Built once
 * per config snapshot; `pick` does a Map/Set lookup or two, one string hash and
 * a scan of at most N cumulative ranges.
 *
 * Layout: the caller's sticky key is hashed once to a point in [0, 1). The
 * designated canary upstream owns [0, canaryShare); the others follow in config
 * order. So when the canary's share grows (5 % → 20 % → 100 %) every caller that
 * was on the canary stays on it, and when it shrinks only callers leave it.
 */
import type { CanaryConfig } from '../config/schema.js'

export interface PickInput {
  /** Verified caller openid; absent for anonymous callers. */
  openid?: string | undefined
  /** Client IP (already resolved per trustProxy). */
  ip: string
  /** Value of the route's `canary.header` request header, when sent. */
  headerValue?: string | undefined
  /** A number in [0, 1) for `sticky: none`; defaults to Math.random(). Injected by tests. */
  random?: number | undefined
}

export interface PickerUpstream {
  name: string
  weight: number
}

export interface Picker {
  /** Upstream names, in config order; `pick` returns an index into this. */
  readonly names: readonly string[]
  /** Configured weights, in config order. */
  readonly configuredWeights: readonly number[]
  /** Weights actually used for the ranges (after rollback and its fallback), config order. */
  readonly weights: readonly number[]
  /** Index of the canary upstream (`canary.upstream` ?? `canary.ramp.upstream` ?? `canary.rollback.upstream` ?? the last). */
  readonly canaryIndex: number
  /** Lower-cased name of the override header, or undefined when none is configured. */
  readonly headerName: string | undefined
  /** Upstreams rolled back: configured weight > 0, effective weight 0. */
  readonly rolledBack: readonly boolean[]
  /** The upstream index for this request. */
  pick (input: PickInput): number
  /** A picker with the same settings and these effective weights (config order). */
  withWeights (weights: readonly number[]): Picker
  /** A picker with upstream `index` rolled back (effective weight 0); others keep their current effective weights. */
  withRolledBack (index: number): Picker
}

/** Precomputed, shared by every picker derived from one config. */
interface Shared {
  names: readonly string[]
  configured: readonly number[]
  byName: ReadonlyMap<string, number>
  canaryIndex: number
  sticky: 'none' | 'openid' | 'ip'
  headerName: string | undefined
  openids: ReadonlySet<string>
  /** Upstream indices in range order: the canary first, then the rest in config order. */
  layout: Int32Array
}

/** Build the picker of one route from its upstreams and canary settings. */
export function createPicker (upstreams: readonly PickerUpstream[], canary: CanaryConfig | undefined): Picker {
  if (upstreams.length === 0) throw new RangeError('createPicker: a route needs at least one upstream')
  const names = upstreams.map((u) => u.name)
  const byName = new Map<string, number>()
  names.forEach((n, i) => { if (!byName.has(n)) byName.set(n, i) })
  const canaryName = canary?.upstream ?? canary?.ramp?.upstream ?? canary?.rollback?.upstream
  const canaryIndex = canaryName !== undefined && byName.has(canaryName) ? byName.get(canaryName) as number : upstreams.length - 1
  const layout = new Int32Array(upstreams.length)
  layout[0] = canaryIndex
  for (let i = 0, k = 1; i < upstreams.length; i++) if (i !== canaryIndex) layout[k++] = i
  const configured = upstreams.map((u) => u.weight)
  const shared: Shared = {
    names,
    configured,
    byName,
    canaryIndex,
    // Without a canary block the upstreams are plain weighted replicas.
    sticky: canary?.sticky ?? 'none',
    headerName: canary?.header?.toLowerCase(),
    openids: new Set(canary?.openids ?? []),
    layout
  }
  return build(shared, configured)
}

function build (s: Shared, requested: readonly number[]): Picker {
  const n = s.names.length
  if (requested.length !== n) throw new RangeError(`picker weights: expected ${n} weights, got ${requested.length}`)
  const rolledBack = s.configured.map((w, i) => w > 0 && !(requested[i] > 0))
  let weights = requested.map((w) => (Number.isFinite(w) && w > 0 ? w : 0))
  if (weights.every((w) => w === 0)) {
    // Nothing left to weigh (e.g. the only weighted upstream was rolled back):
    // split evenly over the upstreams that were not rolled back (weight-0
    // standbys such as a stable version after a full cut-over); if every one
    // was rolled back, serving beats refusing, so use the configured weights.
    const standby = rolledBack.map((r) => (r ? 0 : 1))
    weights = standby.some((w) => w > 0) ? standby : [...s.configured]
    if (weights.every((w) => w === 0)) weights = weights.map(() => 1)
  }
  const total = weights.reduce((a, b) => a + b, 0)
  // Range ends as fractions of [0, 1): the same share gives the same double
  // whatever the total, so a growing share keeps every point it had.
  const ends = new Float64Array(n)
  let cum = 0
  let lastPositive = s.layout[0]
  let positives = 0
  for (let k = 0; k < n; k++) {
    const idx = s.layout[k]
    cum += weights[idx]
    ends[k] = cum / total
    if (weights[idx] > 0) { lastPositive = idx; positives++ }
  }
  ends[n - 1] = 1
  // With one weighted upstream there is nothing to hash.
  const only = positives === 1 ? lastPositive : -1
  const canaryLive = !rolledBack[s.canaryIndex]
  const { byName, openids, layout, sticky, canaryIndex } = s
  const checkHeader = s.headerName !== undefined
  const checkOpenids = openids.size > 0 && canaryLive

  const picker: Picker = {
    names: s.names,
    configuredWeights: s.configured,
    weights,
    canaryIndex,
    headerName: s.headerName,
    rolledBack,
    pick (input: PickInput): number {
      if (n === 1) return 0
      if (checkHeader && input.headerValue !== undefined) {
        const forced = byName.get(input.headerValue)
        if (forced !== undefined) return forced
      }
      if (checkOpenids && input.openid !== undefined && openids.has(input.openid)) return canaryIndex
      if (only >= 0) return only
      let point: number
      if (sticky === 'none') point = input.random ?? Math.random()
      else point = hashToUnit(sticky === 'openid' ? (input.openid ?? input.ip) : input.ip)
      for (let k = 0; k < n; k++) if (point < ends[k]) return layout[k]
      return lastPositive // only reachable for a bad injected random (>= 1 or NaN)
    },
    withWeights (next: readonly number[]): Picker {
      return build(s, next)
    },
    withRolledBack (index: number): Picker {
      if (!(index >= 0 && index < n)) throw new RangeError(`picker: no upstream at index ${index}`)
      const next = requested.slice()
      next[index] = 0
      return build(s, next)
    }
  }
  return picker
}

/**
 * Stable, fast hash of a string to [0, 1): FNV-1a 32-bit over UTF-16 code
 * units, then murmur3's fmix32 so similar keys (`user1`, `user2`) spread over
 * the high bits the mapping depends on. Not cryptographic; it need not be.
 */
export function hashToUnit (key: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return (h >>> 0) / 4294967296
}
