// Upstreams whose error rate and latency a test controls, and traffic through a gateway, for the ramp tests.
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import type { RolloutControl } from '../../src/proxy/rollout.js'
import type { StartedGateway, TestContext } from './gateway.js'
import { startServer } from './upstream.js'

export interface ControlledUpstream {
  url: string
  /** Requests received so far. */
  hits: number
  /** Every `failEvery`-th request answers 503 (0: none). */
  failEvery: number
  /** Answer after this many ms. */
  delayMs: number
}

export async function controlledUpstream (t: TestContext, name: string): Promise<ControlledUpstream> {
  const u: ControlledUpstream = { url: '', hits: 0, failEvery: 0, delayMs: 0 }
  const { url } = await startServer(t, (req, res) => {
    req.resume()
    const n = ++u.hits
    const answer = (): void => {
      const fail = u.failEvery > 0 && n % u.failEvery === 0
      res.writeHead(fail ? 503 : 200, { 'content-type': 'text/plain' })
      res.end(name)
    }
    if (u.delayMs > 0) sleep(u.delayMs).then(answer, () => {})
    else answer()
  })
  u.url = url
  return u
}

/**
 * The ramp route: sticky none, so every request is placed afresh by the current weights. maxLatencyRatio 10:
 * on a loaded test machine the gateway's own queueing puts up to ~100 ms on either side's p99 (the
 * slow-canary test sets 1.5 with a canary 250 ms slower).
 */
export const rampRoute = (stable: ControlledUpstream, canary: ControlledUpstream, ramp: Record<string, unknown> = {}) => ({
  name: 'orders',
  prefix: '/orders',
  auth: 'public',
  upstreams: [{ name: 'stable', url: stable.url, weight: 100 }, { name: 'canary', url: canary.url, weight: 0 }],
  canary: { sticky: 'none', ramp: { upstream: 'canary', steps: [5, 20, 50, 100], interval: '10s', minRequests: 20, errorRate: 0.01, maxLatencyRatio: 10, ...ramp } }
})

/** Send `n` requests, `concurrency` at a time, spread over the gateways; returns the statuses seen. */
export async function traffic (gws: readonly StartedGateway[], n: number, concurrency = 4): Promise<Record<number, number>> {
  const seen: Record<number, number> = {}
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      const gw = gws[i % gws.length]
      const res = await request(`${gw.url}/orders/${i}`)
      await res.body.dump()
      seen[res.statusCode] = (seen[res.statusCode] ?? 0) + 1
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return seen
}

/** Traffic (at least `atLeast` requests) until the canary has had at least `min` more; returns the step's hits per upstream. */
export async function trafficUntil (gws: readonly StartedGateway[], stable: ControlledUpstream, canary: ControlledUpstream, min: number, atLeast = 200): Promise<{ stable: number, canary: number }> {
  const s0 = stable.hits
  const c0 = canary.hits
  await traffic(gws, atLeast)
  for (let i = 0; i < 200 && canary.hits - c0 < min; i++) await traffic(gws, 40)
  return { stable: stable.hits - s0, canary: canary.hits - c0 }
}

export const rollouts = (gw: StartedGateway): RolloutControl => gw.gateway.public.rollouts
