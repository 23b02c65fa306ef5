/**
 * The one polling helper: wait for something another process, socket or timer
 * makes true, without guessing a sleep. Fails loudly when it never happens.
 */
import { setTimeout as sleep } from 'node:timers/promises'

/** Poll `cond` every `everyMs` (default 10 ms) until it holds; rejects after `timeoutMs` (default 3 s). */
export async function waitUntil (cond: () => boolean | Promise<boolean>, timeoutMs = 3000, everyMs = 10): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`condition not met within ${timeoutMs} ms`)
    await sleep(everyMs)
  }
}

/**
 * Poll `fn` until `done` holds for its answer or `limitMs` passes; returns the last answer and
 * the elapsed ms (for tests that measure how long something took, e.g. revocation propagation).
 */
export async function pollAnswer<T> (fn: () => Promise<T>, done: (answer: T) => boolean, limitMs: number, everyMs = 5): Promise<{ last: T, ms: number }> {
  const start = performance.now()
  for (;;) {
    const last = await fn()
    const ms = performance.now() - start
    if (done(last) || ms > limitMs) return { last, ms }
    await sleep(everyMs)
  }
}
