import t from 'tap'
import { stringify } from 'yaml'
import { ConfigError } from '../src/config/errors.js'
import { parseConfig } from '../src/config/load.js'
import { createPicker } from '../src/proxy/picker.js'
import { baseConfig, merge } from './helpers/gateway.js'

const problemsOf = (patch: Record<string, unknown>): string[] => {
  try {
    parseConfig(stringify(merge(baseConfig(), patch)), {})
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`).sort()
    throw e
  }
  return []
}
const up = (name: string, weight = 1) => ({ name, url: 'http://127.0.0.1:1', weight })
const route = (canary: Record<string, unknown>, upstreams = [up('stable', 100), up('canary', 0)]) =>
  ({ routes: [{ name: 'orders', prefix: '/orders', upstreams, canary }] })

t.test('canary.ramp: defaults filled, durations decoded', async (t) => {
  const c = parseConfig(stringify(merge(baseConfig(), route({ ramp: { upstream: 'canary', interval: '30s' } }))), {})
  t.same(c.routes[0].canary?.ramp, { upstream: 'canary', steps: [5, 20, 50, 100], interval: 30_000, minRequests: 100, errorRate: 0.01, maxLatencyRatio: 1.5 })
  t.equal(createPicker(c.routes[0].upstreams, c.routes[0].canary).canaryIndex, 1, "the ramp's upstream owns the picker's canary range")
})

t.test('canary.ramp: rules the schema cannot express', async (t) => {
  t.same(problemsOf(route({ ramp: { upstream: 'nope' } })), [
    "routes[0].canary.ramp.upstream: names no upstream of route 'orders'"
  ])
  t.same(problemsOf(route({ ramp: { upstream: 'canary', steps: [5, 50, 20, 100] } })), [
    'routes[0].canary.ramp.steps[2]: must be greater than the step before it (50)'
  ])
  t.same(problemsOf(route({ ramp: { upstream: 'canary', steps: [5, 5] } })), [
    'routes[0].canary.ramp.steps[1]: must be greater than the step before it (5)'
  ])
  t.match(problemsOf(route({ ramp: { upstream: 'canary', steps: [0, 101] } })).join('\n'), /steps\/0[\s\S]*steps\/1|steps\[0\][\s\S]*steps\[1\]/)
  t.same(problemsOf(route({ ramp: { upstream: 'canary' } }, [up('canary', 1)])), [
    'routes[0].canary.ramp: needs a stable upstream besides the canary (the route has one upstream)'
  ])
  t.same(problemsOf(route({ ramp: { upstream: 'canary' } }, [up('stable', 0), up('canary', 1)])), [
    "routes[0].upstreams: a ramp needs an upstream other than 'canary' with a weight > 0 (the stable version)"
  ])
  t.same(problemsOf(route({ upstream: 'stable', rollback: { upstream: 'stable' }, ramp: { upstream: 'canary' } })), [
    "routes[0].canary.rollback.upstream: must be the ramp's upstream 'canary'",
    "routes[0].canary.upstream: must be the ramp's upstream 'canary' (or be left out)"
  ])
  t.same(problemsOf(route({ upstream: 'canary', rollback: { upstream: 'canary' }, ramp: { upstream: 'canary', steps: [10, 100] } })), [])
})
