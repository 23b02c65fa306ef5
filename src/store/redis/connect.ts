/**
 * Connections for the configured Redis topology — a single server (`store.url`),
 * a Redis Cluster (`store.cluster`) or a master behind Sentinel (`store.sentinel`) —
 * all failing fast while disconnected (no offline queue, 1 s command timeout) and
 * reconnecting in the background (Sentinel: asks the sentinels for the current
 * master; Cluster: rediscovers the slots).
 */
import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis'
import { DEFAULT_REDIS_URL, type StoreConfig } from '../../config/schema.js'

// 1 s: a command that has not answered by then fails (STORE_UNAVAILABLE) instead of hanging the request
const COMMAND_TIMEOUT_MS = 1000
// 2 s: TCP connect timeout
const CONNECT_TIMEOUT_MS = 2000
// 5 s: Cluster slot map refresh, so a failover or resharding is followed without waiting for errors
const SLOTS_REFRESH_MS = 5000
// Cluster: at most 5 tries of one command across MOVED/ASK/failover redirections (~0.5 s), then fail
const MAX_REDIRECTIONS = 5

/** Where the store connects, for the log line at start (a URL's password masked). */
export function describe (config: StoreConfig): { nodes: string[], master?: string } {
  const nodes = config.cluster?.nodes ?? config.sentinel?.nodes ?? [withoutPassword(config.url ?? DEFAULT_REDIS_URL)]
  return { nodes, ...(config.sentinel !== undefined ? { master: config.sentinel.name } : {}) }
}

export function errText (err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}

const SUB_NAME = 'wegate-sub'

// reconnect forever, backing off 100 ms → 2 s
const backoff = (times: number): number => Math.min(times * 100, 2000)

// A failed-over master that was turned into a replica answers writes with READONLY: reconnect
// (Sentinel then asks where the master is now; a DNS endpoint resolves again). The command fails.
const reconnectOnError = (err: Error): boolean => err.message.includes('READONLY')

/** `host:port` (or `[v6]:port`) → ioredis' { host, port }. */
function address (node: string): { host: string, port: number } {
  const i = node.lastIndexOf(':')
  return { host: node.slice(0, i).replace(/^\[(.*)\]$/, '$1'), port: Number(node.slice(i + 1)) }
}

/** A Redis URL fit for the log: the password (if any) replaced by ***. */
export function withoutPassword (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable url)'
  }
}

export interface Connections {
  topology: 'single' | 'cluster' | 'sentinel'
  main: Redis | Cluster
  /** A new subscriber connection: a plain Redis (Cluster: to one node of the cluster). */
  subscriber: () => Redis
  /** Heartbeat check of the main side; resolves false when a Cluster reports cluster_state other than ok. */
  probe: () => Promise<boolean>
  /** Sentinel: call `onSwitch` with the new master's address at every failover; returns a stop function. */
  watchFailovers?: (onSwitch: (host: string, port: number) => void) => () => void
}

/** The connections for the configured topology; all of them fail fast while disconnected. */
export function connect (config: StoreConfig): Connections {
  const base: RedisOptions = {
    connectionName: 'wegate', // CLIENT LIST tells the gateway's connections apart (the subscriber: wegate-sub)
    enableOfflineQueue: false, // fail fast while disconnected: no request waits for a reconnect
    maxRetriesPerRequest: 1,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    autoResubscribe: false, // we subscribe on every 'ready' ourselves, then reload the mirror
    retryStrategy: backoff,
    reconnectOnError
  }
  const auth = (t: { username?: string, password?: string, tls: boolean }): RedisOptions => ({
    ...(t.username !== undefined ? { username: t.username } : {}),
    ...(t.password !== undefined ? { password: t.password } : {}),
    ...(t.tls ? { tls: {} } : {})
  })

  if (config.cluster !== undefined) {
    const seeds: ClusterNode[] = config.cluster.nodes.map(address)
    const nodeOptions: RedisOptions = { ...base, ...auth(config.cluster) }
    const main = new Cluster(seeds, {
      redisOptions: nodeOptions,
      // with TLS keep the seeds' host names (certificates name hosts, not addresses)
      ...(config.cluster.tls ? { dnsLookup: (host: string, cb: (err: null, address: string) => void) => cb(null, host) } : {}),
      enableOfflineQueue: false,
      enableReadyCheck: true, // refuses a cluster whose state is not ok
      clusterRetryStrategy: backoff,
      slotsRefreshInterval: SLOTS_REFRESH_MS,
      slotsRefreshTimeout: COMMAND_TIMEOUT_MS,
      maxRedirections: MAX_REDIRECTIONS,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      retryDelayOnTryAgain: 100
    })
    let turn = 0
    let last = ''
    return {
      topology: 'cluster',
      main,
      subscriber () {
        // any node will do (PUBLISH is broadcast); prefer the nodes the cluster knows now over the seeds,
        // and another node than the last one (a new subscriber means the last one's node went away)
        const known = main.status === 'ready' ? main.nodes('all').map((n) => ({ host: n.options.host, port: n.options.port })) : []
        const all = known.length > 0 ? known : seeds as Array<{ host?: string, port?: number }>
        const others = all.filter((n) => `${n.host ?? ''}:${n.port ?? ''}` !== last)
        const pool = others.length > 0 ? others : all
        const node = pool[turn++ % pool.length]
        last = `${node.host ?? ''}:${node.port ?? ''}`
        // a few quick retries on this node, then 'end' and another node
        return new Redis({ ...nodeOptions, connectionName: SUB_NAME, host: node.host, port: node.port, retryStrategy: (times: number) => times > 3 ? null : times * 100 })
      },
      probe: async () => /^cluster_state:ok\b/m.test(await main.cluster('INFO'))
    }
  }

  if (config.sentinel !== undefined) {
    const s = config.sentinel
    const main = new Redis({
      ...base,
      ...auth(s),
      sentinels: s.nodes.map(address),
      name: s.name,
      role: 'master',
      ...(s.sentinelPassword !== undefined ? { sentinelPassword: s.sentinelPassword } : {}),
      ...(s.tls ? { sentinelTLS: {}, enableTLSForSentinelMode: true } : {}),
      sentinelCommandTimeout: COMMAND_TIMEOUT_MS,
      // every sentinel asked in turn, then again after 100 ms → 2 s
      sentinelRetryStrategy: backoff
      // Not ioredis' failoverDetector: it also drops a connection already on the new master (a second outage
      // right after recovering), and one in the middle of a reconnect ends the client for good (ioredis 5.11).
      // watchFailovers below does the job.
    })
    return {
      topology: 'sentinel',
      main,
      subscriber: () => main.duplicate({ connectionName: SUB_NAME }),
      probe: async () => { await main.ping(); return true },
      watchFailovers (onSwitch) {
        // one subscriber per sentinel (there are few): whichever hears +switch-master first tells us
        const watchers = s.nodes.map((node) => {
          const w = new Redis({
            ...address(node),
            connectionName: 'wegate-watch',
            ...(s.sentinelPassword !== undefined ? { password: s.sentinelPassword } : {}),
            ...(s.tls ? { tls: {} } : {}),
            connectTimeout: CONNECT_TIMEOUT_MS,
            retryStrategy: backoff
          })
          w.on('error', () => {}) // a sentinel down is not the store down; the data connections report their own errors
          w.subscribe('+switch-master').catch(() => {})
          w.on('message', (_ch: string, msg: string) => {
            // "<name> <old ip> <old port> <new ip> <new port>"
            const [name, , , host, port] = msg.split(' ')
            if (name === s.name && host !== undefined && port !== undefined) onSwitch(host, Number(port))
          })
          return w
        })
        return () => { for (const w of watchers) w.disconnect() }
      }
    }
  }

  const main = new Redis(config.url ?? DEFAULT_REDIS_URL, base)
  return { topology: 'single', main, subscriber: () => main.duplicate({ connectionName: SUB_NAME }), probe: async () => { await main.ping(); return true } }
}
