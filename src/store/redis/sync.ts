/**
 * Keeping the mirror in sync with Redis: the subscriber connection, the events of
 * both connections (a lost one marks the mirror stale until it is fully reloaded),
 * a 1 s heartbeat for half-open sockets and Cluster state, and Sentinel failover
 * following. `synced()` is what failMode and readiness read.
 */
import { Cluster, type Redis } from 'ioredis'
import { GatewayError } from '../../errors.js'
import type { StoreLogger } from '../types.js'
import { errText, type Connections } from './connect.js'
import type { Mirror } from './mirror.js'

// 1 s: heartbeat on both connections; a silent failure marks the mirror stale within ~1 s
const HEARTBEAT_MS = 1000
// 60 s: sweep expired entries from the local mirror
const SWEEP_MS = 60_000

export interface Sync {
  /** The mirror holds everything Redis holds (connected, subscribed, reloaded since). */
  synced (): boolean
  /** Cluster: whether the cluster says all its slots are served; always true otherwise. */
  topologyOk (): boolean
  /** Resolves once synced; rejects with STORE_UNAVAILABLE after timeoutMs. */
  ready (timeoutMs: number): Promise<void>
  close (): void
}

export function startSync (conns: Connections, mirror: Mirror, opts: { channel: string, logger: StoreLogger, now: () => number }): Sync {
  const { main, topology } = conns
  const { channel, logger } = opts
  let closed = false
  let subscribed = false
  let synced = false
  let topologyOk = true
  // bumped whenever a connection is lost: a reload started before the loss must not mark the mirror fresh
  let generation = 0
  let waiters: Array<() => void> = []

  const markStale = (why: string): void => {
    generation++
    if (closed) return
    if (synced) logger.warn({ why }, 'redis store: revocation mirror stale')
    synced = false
  }

  /** Full reload (additive: revocations are never undone early), then wake whoever waits in ready(). */
  const resync = async (): Promise<void> => {
    if (closed || synced || main.status !== 'ready' || !subscribed) return
    const gen = generation
    try {
      if (!await mirror.reload(() => gen === generation && !closed)) return
      synced = true
      const w = waiters
      waiters = []
      for (const fn of w) fn()
    } catch (err) {
      logger.warn({ err: errText(err) }, 'redis store: mirror reload failed; will retry')
    }
  }

  // ioredis emits an error per reconnect attempt (Sentinel: two that alternate): log each distinct one once per outage
  const logged = new Set<string>()
  const onError = (err: Error): void => {
    if (logged.has(err.message) || logged.size > 20) return
    logged.add(err.message)
    logger.warn({ err: err.message, topology }, 'redis store: connection error')
  }
  main.on('error', onError)
  if (main instanceof Cluster) main.on('node error', (err: Error, node: string) => onError(new Error(`${node}: ${err.message}`)))
  main.on('close', () => markStale('main connection closed'))
  // ioredis gave up on the connection (it should not: we retry forever): start it again
  main.on('end', () => {
    if (closed) return
    logger.warn({ topology }, 'redis store: connection ended; reconnecting')
    setTimeout(() => { if (!closed) main.connect().catch(() => {}) }, 100).unref()
  })
  main.on('ready', () => { logged.clear(); resync().catch(() => {}) })

  // The subscriber: a plain Redis connection whose ready/close events are the subscription's own.
  let sub: Redis
  const startSubscriber = (): void => {
    const s = conns.subscriber()
    sub = s
    s.on('error', onError)
    s.on('close', () => {
      if (sub !== s) return
      subscribed = false
      markStale('subscriber connection closed')
    })
    // 'end': this connection gave up (Cluster: its node is gone); start another, on another node
    s.on('end', () => {
      if (sub !== s || closed) return
      setTimeout(() => { if (!closed && sub === s) startSubscriber() }, 100).unref()
    })
    s.on('ready', () => {
      s.subscribe(channel).then(() => {
        if (sub !== s) return
        subscribed = true
        return resync()
      }).catch((err: unknown) => logger.warn({ err: errText(err) }, 'redis store: subscribe failed'))
    })
    s.on('message', (ch: string, raw: string) => { if (ch === channel) mirror.receive(raw) })
  }
  startSubscriber()

  // Sentinel, planned failover (SENTINEL FAILOVER): the old master stays up and keeps acknowledging writes,
  // lost when the sentinels turn it into a replica seconds later. Leave it as soon as a sentinel names the new one.
  const stopWatching = conns.watchFailovers?.((host, port) => {
    for (const conn of [main as Redis, sub]) {
      const at = conn.stream
      const on = conn.status === 'ready' && at?.remotePort === port && at.remoteAddress?.replace(/^::ffff:/, '') === host
      // a connection that is not ready asks the sentinels anyway when it connects
      if (conn.status === 'ready' && !on) {
        logger.warn({ topology, master: `${host}:${port}` }, 'redis store: sentinel failover; reconnecting to the new master')
        conn.disconnect(true)
      }
    }
  })

  // A half-open socket never emits 'close': probe both connections, treat a failure as a loss.
  const heartbeat = setInterval(() => {
    if (closed) return
    Promise.all([conns.probe(), sub.ping()]).then(([ok]) => {
      if (ok !== topologyOk) {
        if (ok) logger.info({ topology }, 'redis store: cluster state ok again')
        else logger.warn({ topology }, 'redis store: cluster state is not ok (slots without a reachable master)')
      }
      topologyOk = ok
      // a store emptied without this instance losing its connections (FLUSHALL, an operator) is seen here
      return synced ? mirror.checkEpoch() : resync()
    }).catch((err: unknown) => {
      if (synced) markStale('heartbeat failed: ' + errText(err))
    })
  }, HEARTBEAT_MS)
  heartbeat.unref()
  const sweeper = setInterval(() => mirror.revocations.sweep(opts.now()), SWEEP_MS)
  sweeper.unref()

  return {
    synced: () => synced,
    topologyOk: () => topologyOk,
    ready (timeoutMs) {
      if (synced) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== done)
          reject(new GatewayError('STORE_UNAVAILABLE', { detail: `redis not ready after ${timeoutMs} ms` }))
        }, timeoutMs)
        const done = (): void => { clearTimeout(timer); resolve() }
        waiters.push(done)
      })
    },
    close () {
      if (closed) return
      closed = true
      clearInterval(heartbeat)
      clearInterval(sweeper)
      stopWatching?.()
      sub.disconnect()
      main.disconnect()
    }
  }
}
