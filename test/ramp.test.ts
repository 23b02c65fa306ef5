// The ramp state machine and its window, without network or timers: the clock is a number.
import t from 'tap'
import type { RampConfig } from '../src/config/schema.js'
import { command, decide, shareOf, startRamp, weightsFor, type Ramp } from '../src/proxy/ramp.js'
import { emptyWindow, observe, p99, sumWindows, type StepWindow } from '../src/proxy/ramp-window.js'

const settings: RampConfig = { upstream: 'canary', steps: [5, 20, 50, 100], interval: 10_000, minRequests: 100, errorRate: 0.01, maxLatencyRatio: 1.5 }

function windowOf (canary: { n: number, errors?: number, ms?: number }, stable: { n: number, ms?: number }): StepWindow {
  const w = emptyWindow()
  for (let i = 0; i < canary.n; i++) observe(w.canary, i < (canary.errors ?? 0), canary.ms ?? 3)
  for (let i = 0; i < stable.n; i++) observe(w.stable, false, stable.ms ?? 3)
  return w
}

t.test('the histogram: p99 within a bucket, windows of several instances add up', async (t) => {
  const w = emptyWindow()
  t.equal(p99(w.canary), undefined, 'nothing measured: no p99')
  for (let i = 0; i < 990; i++) observe(w.canary, false, 20)
  for (let i = 0; i < 10; i++) observe(w.canary, true, 400)
  const v = p99(w.canary)!
  t.ok(v >= 20 && v <= 24, `p99 ${v}: 20 ms within its bucket (990 of 1000 at 20 ms)`)
  const sum = sumWindows([w, windowOf({ n: 1000, ms: 400 }, { n: 5 }), JSON.parse('{"canary":{"requests":"x"}}')])
  t.equal(sum.canary.requests, 2000)
  t.equal(sum.canary.errors, 10)
  t.equal(sum.stable.requests, 5)
  const s = p99(sum.canary)!
  t.ok(s >= 400 && s <= 480, `summed p99 ${s}: 400 ms within its bucket`)
})

t.test('weights: the canary gets its share, the others split the rest as configured', async (t) => {
  t.same(weightsFor([90, 10], 1, 20), [80, 20])
  t.same(weightsFor([30, 10, 0], 2, 60), [30, 10, 60])
  t.same(weightsFor([0, 0, 5], 2, 50), [25, 25, 50], 'stable weights all 0: split evenly')
  t.same(weightsFor([90, 10], 1, 100), [0, 100])
})

t.test('a healthy canary walks every step, each lasting its interval, then is promoted', async (t) => {
  let now = 1_000_000
  let r: Ramp = startRamp('id1', now)
  const seen: string[] = []
  for (let guard = 0; guard < 20 && r.state === 'running'; guard++) {
    const w = windowOf({ n: 150 }, { n: 1000 })
    const early = decide(settings, r, w, now + 9_999)
    t.equal(early.action, 'wait', 'never before the interval')
    now += 10_000
    const d = decide(settings, r, w, now)
    seen.push(`${shareOf(settings, r)}:${d.action}`)
    r = d.ramp
  }
  t.same(seen, ['5:advance', '20:advance', '50:advance', '100:promote'])
  t.equal(r.state, 'promoted')
  t.equal(shareOf(settings, r), 100, 'promoted: the last step\'s share until the config changes')
  t.match(r.reason, /promote the file now/)
})

t.test('not enough canary requests: the step is held past its interval', async (t) => {
  const r = startRamp('id', 0)
  const d = decide(settings, r, windowOf({ n: 99 }, { n: 5000 }), 60_000)
  t.equal(d.action, 'wait')
  t.equal(d.reason, '99 of 100 canary requests')
  t.equal(d.ramp, r)
})

t.test('errors over the rate abort at once, before the interval is over', async (t) => {
  const r = { ...startRamp('id', 0), step: 1 }
  t.equal(decide(settings, r, windowOf({ n: 100, errors: 1 }, { n: 100 }), 1).action, 'wait', '1 % is not over 1 %')
  const d = decide(settings, r, windowOf({ n: 100, errors: 2 }, { n: 100 }), 1)
  t.equal(d.action, 'abort')
  t.equal(d.ramp.state, 'aborted')
  t.equal(d.reason, 'error rate 0.02 > 0.01 at 20 %')
  t.same({ requests: d.analysis.canary.requests, errors: d.analysis.canary.errors }, { requests: 100, errors: 2 })
  t.equal(shareOf(settings, d.ramp), 0, 'aborted: the canary gets nothing')
  t.equal(decide(settings, r, windowOf({ n: 50, errors: 50 }, { n: 100 }), 1).action, 'wait', 'below minRequests nothing is judged')
})

t.test('a slow canary is stopped by the latency ratio at the end of the step; noise under the floor never is', async (t) => {
  const r = startRamp('id', 0)
  const slow = decide(settings, r, windowOf({ n: 200, ms: 120 }, { n: 2000, ms: 30 }), 10_000)
  t.equal(slow.action, 'abort')
  t.match(slow.reason, /canary p99 \d+(\.\d+)? ms > 1.5 × stable p99/)
  t.ok(slow.analysis.latencyRatio! > 3)
  t.equal(decide(settings, r, windowOf({ n: 200, ms: 80 }, { n: 2000, ms: 20 }), 9_999).action, 'wait', 'latency waits for the end of the step')
  t.equal(decide(settings, r, windowOf({ n: 200, ms: 20 }, { n: 2000, ms: 0.6 }), 10_000).action, 'advance', '20 ms vs 0.6 ms: both under the floor')
  const last = { ...startRamp('id', 0), step: 3, baselineP99: 20 }
  const d = decide(settings, last, windowOf({ n: 200, ms: 80 }, { n: 0 }), 10_000)
  t.equal(d.action, 'abort', 'at 100 % the stable p99 of the step before is the reference')
})

t.test('commands: pause holds, resume continues, promote and abort end it; invalid ones refused', async (t) => {
  const r = startRamp('id', 0)
  const paused = command(settings, r, 'pause', 5)
  t.equal(paused.state, 'paused')
  t.equal(decide(settings, paused, windowOf({ n: 500 }, { n: 500 }), 1e9).action, 'wait', 'paused: held past its interval')
  t.throws(() => command(settings, paused, 'pause', 6), RangeError)
  const resumed = command(settings, paused, 'resume', 7)
  t.equal(decide(settings, resumed, windowOf({ n: 500 }, { n: 500 }), 1e9).action, 'advance')
  const promoted = command(settings, resumed, 'promote', 8)
  t.same([promoted.state, shareOf(settings, promoted)], ['promoted', 100])
  t.throws(() => command(settings, promoted, 'abort', 9), /cannot abort a promoted ramp/)
  const aborted = command(settings, r, 'abort', 9)
  t.same([aborted.state, shareOf(settings, aborted)], ['aborted', 0])
  t.throws(() => command(settings, aborted, 'resume', 9), RangeError)
})
