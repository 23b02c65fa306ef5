/**
 * The one polling helper: for conditions a test cannot be told about (another
 * process's state seen over HTTP), check until it holds, within a bound.
 */
import { setTimeout as sleep } from 'node:timers/promises'

export interface PollOptions {
  /** Give up after this long (ms); default 5000. */
  timeoutMs?: number
  /** Pause between checks (ms); default 20. */
  everyMs?: number
}

/** Resolves true as soon as `check` holds, false if it still does not after `timeoutMs`. */
export async function eventually (check: () => boolean | Promise<boolean>, opts: PollOptions = {}): Promise<boolean> {
  const until = performance.now() + (opts.timeoutMs ?? 5000)
  for (;;) {
    if (await check()) return true
    if (performance.now() > until) return false
    await sleep(opts.everyMs ?? 20)
  }
}
