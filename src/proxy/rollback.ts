/**
 * Canary rollback decision: a sliding-window error-rate tracker for one
 * watched upstream. It only decides; the caller applies the decision with
 * `route.rollBack(route.rollbackUpstream.index)`, logs it and counts it.
 *
 * The window is a ring of `buckets` time slots of `windowMs / buckets` each,
 * with running totals, so `record` is O(1) amortised (it clears at most
 * `buckets` slots when time jumps), allocates nothing and needs no timer:
 * slots that fell out of the window are cleared lazily when time moves.
 * The window therefore spans the current slot plus the `buckets - 1` before
 * it: between `windowMs - windowMs / buckets` and `windowMs` of history.
 */

export interface RollbackTrackerOptions {
  /** Roll back when errors / requests is strictly greater than this (0.01 = "> 1 %"). */
  errorRate: number
  /** Sliding window length, ms. */
  windowMs: number
  /** No decision while the window holds fewer requests than this. */
  minRequests: number
  /** Clock in ms; default a monotonic clock (`performance.now`), so wall-clock jumps do not skew the window. Tests inject one. */
  now?: () => number
  /** Slots in the ring (window resolution); default 10. */
  buckets?: number
}

export interface RollbackStats {
  /** Outcomes recorded in the current window. */
  requests: number
  /** Of which errors. */
  errors: number
  /** errors / requests, 0 when there were none. */
  rate: number
}

export interface RollbackTracker {
  /**
   * Record one outcome of a request sent to the watched upstream. What counts
   * as an error is the caller's decision (typically 5xx responses, connection
   * errors and timeouts; not 4xx, which are the client's). Returns true exactly
   * once: for the outcome after which the window holds >= minRequests requests
   * and errors / requests > errorRate. The caller then rolls the upstream back.
   * After that it returns false but keeps counting (see stats()).
   */
  record (isError: boolean): boolean
  /** Counts in the current window (expired slots excluded). */
  stats (): RollbackStats
  /** True once the tracker has tripped; it never resets (a config reload builds a new tracker). */
  readonly tripped: boolean
}

/** Create the error-rate tracker of one canary (`canary.rollback` of a route). */
export function createRollbackTracker (opts: RollbackTrackerOptions): RollbackTracker {
  const { errorRate, windowMs, minRequests } = opts
  const buckets = opts.buckets ?? 10
  if (!(errorRate >= 0 && errorRate <= 1)) throw new RangeError(`rollback: errorRate must be in [0, 1], got ${errorRate}`)
  if (!(windowMs > 0 && Number.isFinite(windowMs))) throw new RangeError(`rollback: windowMs must be > 0, got ${windowMs}`)
  if (!(minRequests >= 1)) throw new RangeError(`rollback: minRequests must be >= 1, got ${minRequests}`)
  if (!(Number.isInteger(buckets) && buckets >= 1)) throw new RangeError(`rollback: buckets must be an integer >= 1, got ${buckets}`)
  const now = opts.now ?? (() => performance.now())
  const slotMs = windowMs / buckets

  const requests = new Float64Array(buckets)
  const errors = new Float64Array(buckets)
  let totalRequests = 0
  let totalErrors = 0
  // Index (time / slotMs, floored) of the newest slot; every slot older than
  // `epoch - buckets + 1` has been cleared.
  let epoch = Math.floor(now() / slotMs)
  let tripped = false

  // An injected clock may start below 0; `%` would give a negative index.
  const slot = (e: number): number => ((e % buckets) + buckets) % buckets

  /** Move the ring to the current time, clearing slots that left the window. */
  function advance (): number {
    const e = Math.floor(now() / slotMs)
    // A clock that goes backwards (or NaN) keeps the newest slot: never re-open old ones.
    if (!(e > epoch)) return slot(epoch)
    const steps = Math.min(e - epoch, buckets)
    for (let k = 1; k <= steps; k++) {
      const i = slot(epoch + k)
      totalRequests -= requests[i]
      totalErrors -= errors[i]
      requests[i] = 0
      errors[i] = 0
    }
    epoch = e
    return slot(e)
  }

  return {
    record (isError: boolean): boolean {
      // Still counted after the trip, so stats() keeps describing the upstream
      // (testers can force traffic to it with the canary header).
      const i = advance()
      requests[i]++
      totalRequests++
      if (isError) {
        errors[i]++
        totalErrors++
      }
      // Division, not errors > errorRate * requests: an exact ratio (1/100)
      // rounds to the same double as the configured 0.01, so "exactly 1 %" is
      // never "more than 1 %".
      if (!tripped && totalRequests >= minRequests && totalErrors / totalRequests > errorRate) {
        tripped = true
        return true
      }
      return false
    },
    stats (): RollbackStats {
      advance()
      return { requests: totalRequests, errors: totalErrors, rate: totalRequests === 0 ? 0 : totalErrors / totalRequests }
    },
    get tripped (): boolean {
      return tripped
    }
  }
}
