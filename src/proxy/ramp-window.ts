/**
 * What a ramp step is judged on: per upstream role (the canary, the stable
 * upstreams together) the requests, the errors and a fixed-bucket latency
 * histogram. Buckets grow by 20 % from 0.5 ms to about a minute, so counts
 * from several instances add up bucket by bucket and the p99 read from the
 * sum is within one bucket (±10 %) of the true one.
 */

/** Upper bounds (ms) of the buckets; a last, open bucket follows. */
export const BOUNDS_MS: readonly number[] = (() => {
  const out: number[] = []
  for (let b = 0.5; b < 60_000; b *= 1.2) out.push(Math.round(b * 1000) / 1000)
  return out
})()

export interface Counts {
  requests: number
  errors: number
  /** BOUNDS_MS.length + 1 counts. */
  buckets: number[]
}

/** The window of one step as one instance (or all, summed) saw it. */
export interface StepWindow {
  canary: Counts
  stable: Counts
}

export const emptyCounts = (): Counts => ({ requests: 0, errors: 0, buckets: new Array<number>(BOUNDS_MS.length + 1).fill(0) })
export const emptyWindow = (): StepWindow => ({ canary: emptyCounts(), stable: emptyCounts() })

export function observe (c: Counts, error: boolean, ms: number): void {
  c.requests++
  if (error) c.errors++
  let lo = 0
  let hi = BOUNDS_MS.length
  while (lo < hi) { // first bound >= ms
    const mid = (lo + hi) >> 1
    if (BOUNDS_MS[mid] < ms) lo = mid + 1
    else hi = mid
  }
  c.buckets[lo]++
}

/** Sum windows (from every instance); malformed parts count as nothing. */
export function sumWindows (windows: readonly StepWindow[]): StepWindow {
  const out = emptyWindow()
  for (const w of windows) {
    for (const role of ['canary', 'stable'] as const) {
      const from = w[role]
      const to = out[role]
      to.requests += num(from?.requests)
      to.errors += num(from?.errors)
      for (let i = 0; i < to.buckets.length; i++) to.buckets[i] += num(from?.buckets?.[i])
    }
  }
  return out
}

/** Sum the instances' reports as stored (JSON windows); an unreadable one counts as nothing. */
export function sumReports (reports: readonly string[]): StepWindow {
  return sumWindows(reports.flatMap((r) => { try { return [JSON.parse(r) as StepWindow] } catch { return [] } }))
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : 0)

/** The 99th percentile (ms) of the latencies counted, interpolated within its bucket; undefined when none. */
export function p99 (c: Counts): number | undefined {
  const total = c.buckets.reduce((a, b) => a + b, 0)
  if (total === 0) return undefined
  const rank = 0.99 * total
  let seen = 0
  for (let i = 0; i < c.buckets.length; i++) {
    const n = c.buckets[i]
    if (n > 0 && seen + n >= rank) {
      const lo = i === 0 ? 0 : BOUNDS_MS[i - 1]
      const hi = i < BOUNDS_MS.length ? BOUNDS_MS[i] : lo * 1.2
      return Math.round((lo + (hi - lo) * ((rank - seen) / n)) * 1000) / 1000
    }
    seen += n
  }
  return BOUNDS_MS[BOUNDS_MS.length - 1]
}
