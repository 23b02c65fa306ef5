import t from 'tap'
import { createRollbackTracker, type RollbackTrackerOptions } from '../src/proxy/rollback.js'

/** A tracker on a clock the test moves by hand (ms). */
function tracker (opts: Partial<RollbackTrackerOptions> = {}) {
  const clock = { t: 0 }
  const tr = createRollbackTracker({ errorRate: 0.01, windowMs: 60_000, minRequests: 100, now: () => clock.t, ...opts })
  return { tr, clock }
}

t.test('no trip below minRequests, even at 100 % errors', async (t) => {
  const { tr } = tracker()
  for (let i = 0; i < 99; i++) t.equal(tr.record(true), false)
  t.equal(tr.tripped, false)
  t.same(tr.stats(), { requests: 99, errors: 99, rate: 1 })
  // The 100th request reaches minRequests with the rate far above: trip.
  t.equal(tr.record(true), true)
  t.equal(tr.tripped, true)
})

t.test('a success can be the outcome that trips: it brings the window to minRequests', async (t) => {
  const { tr } = tracker()
  for (let i = 0; i < 99; i++) tr.record(i < 5)
  t.equal(tr.record(false), true, '5 errors in 100 requests > 1 %')
})

t.test('trips exactly at the first outcome that crosses the threshold', async (t) => {
  const { tr } = tracker()
  for (let i = 0; i < 200; i++) t.equal(tr.record(false), false)
  t.equal(tr.record(true), false, '1 / 201')
  t.equal(tr.record(true), false, '2 / 202 = 0.99 %')
  t.equal(tr.record(true), true, '3 / 203 = 1.48 %')
  t.same(tr.stats(), { requests: 203, errors: 3, rate: 3 / 203 })
})

t.test('exactly 1 % does not trip; 1.01 % does', async (t) => {
  for (const [errors, total] of [[1, 100], [3, 300], [7, 700], [100, 10_000]]) {
    const { tr } = tracker()
    let fired = false
    // Successes first, so the rate only climbs, and ends at exactly 1 %.
    for (let i = 0; i < total; i++) fired = tr.record(i >= total - errors) || fired
    t.equal(fired, false, `${errors} / ${total}`)
    t.equal(tr.stats().rate, 0.01)
  }
  const { tr } = tracker()
  let early = false
  for (let i = 0; i < 10_000; i++) early = tr.record(i >= 9_900) || early
  t.equal(early, false, '100 / 10000')
  t.equal(tr.record(true), true, '101 / 10001 = 1.0099 %')

  const other = tracker().tr
  let tripAt = -1
  for (let i = 0; i < 10_000 && tripAt < 0; i++) if (other.record(i % 99 === 0)) tripAt = i
  // One error every 99 requests is 1.0101 %: trips once minRequests is reached.
  t.equal(tripAt, 99)
})

t.test('old errors expire out of the window and the rate recovers', async (t) => {
  const { tr, clock } = tracker({ minRequests: 100 })
  for (let i = 0; i < 50; i++) tr.record(true)
  t.same(tr.stats(), { requests: 50, errors: 50, rate: 1 })
  clock.t = 30_000
  t.equal(tr.stats().errors, 50, 'still inside the 60 s window')
  clock.t = 60_000
  t.same(tr.stats(), { requests: 0, errors: 0, rate: 0 }, 'a full window later the errors are gone')
  for (let i = 0; i < 500; i++) t.equal(tr.record(false), false)
  t.same(tr.stats(), { requests: 500, errors: 0, rate: 0 })
  t.equal(tr.tripped, false)
})

t.test('the window slides one bucket at a time', async (t) => {
  // 10 buckets of 6 s: errors recorded at t = 0 leave when t reaches 60 s.
  const { tr, clock } = tracker({ minRequests: 1_000_000 })
  for (let i = 0; i < 10; i++) tr.record(true)
  clock.t = 6_000
  for (let i = 0; i < 20; i++) tr.record(false)
  clock.t = 59_999
  t.same(tr.stats(), { requests: 30, errors: 10, rate: 10 / 30 })
  clock.t = 60_000
  t.same(tr.stats(), { requests: 20, errors: 0, rate: 0 }, 'the t=0 bucket expired')
  clock.t = 66_000
  t.same(tr.stats(), { requests: 0, errors: 0, rate: 0 })
  // A long pause clears everything at once, and recording works after it.
  clock.t = 10_000_000
  t.equal(tr.record(true), false)
  t.same(tr.stats(), { requests: 1, errors: 1, rate: 1 })
})

t.test('trips only once', async (t) => {
  const { tr, clock } = tracker({ minRequests: 10 })
  const results: boolean[] = []
  for (let i = 0; i < 50; i++) results.push(tr.record(true))
  t.same(results.filter(Boolean).length, 1)
  t.equal(results.indexOf(true), 9)
  clock.t = 1_000_000
  for (let i = 0; i < 50; i++) t.equal(tr.record(true), false, 'no second trip, even in a new window')
  t.equal(tr.tripped, true)
})

t.test('a steady 0.5 % error stream never trips over a long run', async (t) => {
  const { tr, clock } = tracker()
  let fired = 0
  // One request every 10 ms for 30 minutes; one in 200 fails.
  for (let i = 0; i < 180_000; i++) {
    clock.t = i * 10
    if (tr.record(i % 200 === 199)) fired++
  }
  t.equal(fired, 0)
  t.equal(tr.tripped, false)
  const s = tr.stats()
  t.ok(s.requests >= 5_400 && s.requests <= 6_000, `window holds ~1 min of requests (${s.requests})`)
  t.ok(s.rate > 0.004 && s.rate < 0.006, `rate ~0.5 % (${s.rate})`)
})

t.test('matches a brute-force model over a random outcome stream', async (t) => {
  // Deterministic LCG, so a failure reproduces.
  let seed = 12345
  const rand = () => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 4294967296 }
  const windowMs = 1_000
  const buckets = 5
  const slot = windowMs / buckets
  let tripped = 0
  for (let run = 0; run < 20; run++) {
    const { tr, clock } = tracker({ windowMs, buckets, minRequests: 20, errorRate: 0.3 })
    const events: Array<{ at: number, err: boolean }> = []
    let expectedTrip = -1
    let gotTrip = -1
    let mismatches = 0
    for (let i = 0; i < 2_000; i++) {
      clock.t += Math.floor(rand() * 60)
      const err = rand() < 0.12
      events.push({ at: clock.t, err })
      // In the window: events whose slot is one of the last `buckets` slots.
      const oldest = Math.floor(clock.t / slot) - buckets + 1
      while (Math.floor(events[0].at / slot) < oldest) events.shift()
      const errs = events.filter((e) => e.err).length
      if (expectedTrip < 0 && events.length >= 20 && errs / events.length > 0.3) expectedTrip = i
      if (tr.record(err)) gotTrip = i
      if (tr.stats().requests !== events.length) mismatches++
    }
    t.equal(mismatches, 0, `run ${run}: window counts match`)
    t.equal(gotTrip, expectedTrip, `run ${run}: trips at the same outcome`)
    if (expectedTrip >= 0) tripped++
  }
  // The seed gives a mix: streams that trip early, late and never.
  t.ok(tripped >= 10 && tripped < 20, `${tripped} of 20 streams tripped`)
})

t.test('a clock that steps backwards does not reopen old buckets', async (t) => {
  const { tr, clock } = tracker({ minRequests: 1_000 })
  clock.t = 30_000
  tr.record(true)
  clock.t = 10_000
  tr.record(false)
  t.same(tr.stats(), { requests: 2, errors: 1, rate: 0.5 })
  clock.t = 89_999
  t.same(tr.stats(), { requests: 2, errors: 1, rate: 0.5 }, 'both counted in the 30 s bucket')
  clock.t = 90_000
  t.same(tr.stats().requests, 0)
})

t.test('rejects nonsensical options', async (t) => {
  const base = { errorRate: 0.01, windowMs: 60_000, minRequests: 100 }
  t.throws(() => createRollbackTracker({ ...base, errorRate: 2 }), RangeError)
  t.throws(() => createRollbackTracker({ ...base, windowMs: 0 }), RangeError)
  t.throws(() => createRollbackTracker({ ...base, minRequests: 0 }), RangeError)
  t.throws(() => createRollbackTracker({ ...base, buckets: 0 }), RangeError)
  t.throws(() => createRollbackTracker({ ...base, buckets: 2.5 }), RangeError)
})
