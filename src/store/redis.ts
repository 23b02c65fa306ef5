/**
 * Redis Store: shared by every gateway instance, on a single server, a Redis
 * Cluster or behind Sentinel (`store.url` / `store.cluster` / `store.sentinel`).
 *
 * - Refresh families live under one hash tag `{fam:<fid>}` (meta hash, spent
 *   zset, short-lived grace keys), so each family operation is ONE Lua script
 *   (registered once with defineCommand) whose keys share one Cluster hash slot.
 *   Every other script touches one key. keyPrefix cannot hold braces, so it never
 *   moves a key's hash tag.
 * - Revocations are three sorted sets (`{rv}:jti`, `{rv}:fid`, `{rv}:user`,
 *   score = until ms) plus a pub/sub message per revocation. Every instance keeps
 *   a local mirror (RevocationSet) fed by the channel and fully reloaded after
 *   every (re)connect, so the per-request check is a synchronous Map lookup.
 *   On a Cluster, PUBLISH (from the script, on the {rv} slot's master) reaches
 *   every node over the cluster bus: the subscriber is a plain connection to any
 *   one node, moved to another node when its node goes away.
 * - Redis unreachable: commands fail at once (no offline queue, 1 s command
 *   timeout) with STORE_UNAVAILABLE; ioredis reconnects in the background
 *   (Sentinel: asks the sentinels for the current master; Cluster: rediscovers
 *   the slots).
 * - A login claims its wx.login code under `{login:<sha256(appId, code)>}` (SET NX
 *   semantics in Lua, with a TTL), and replaces the claim with its sealed outcome,
 *   so a retry on another instance gets the same answer without calling WeChat.
 * Every key has a TTL. Times are ms; Lua gets `now` from the caller.
 */
import { randomBytes } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { Cluster, Redis, type ClusterNode, type RedisOptions } from 'ioredis'
import { GatewayError } from '../errors.js'
import { DEFAULT_REDIS_URL, type StoreConfig } from '../config/schema.js'
import { RevocationSet } from './memory.js'
import type { RefreshRecord, RotateResult, Store, StoreLogger, StoreOptions } from './types.js'

// 1 s: a command that has not answered by then fails (STORE_UNAVAILABLE) instead of hanging the request
const COMMAND_TIMEOUT_MS = 1000
// 2 s: TCP connect timeout
const CONNECT_TIMEOUT_MS = 2000
// 1 s: heartbeat on both connections; a silent failure marks the mirror stale within ~1 s
const HEARTBEAT_MS = 1000
// 60 s: sweep expired entries from the local mirror
const SWEEP_MS = 60_000
// 5 s: Cluster slot map refresh, so a failover or resharding is followed without waiting for errors
const SLOTS_REFRESH_MS = 5000
// 30 days: the state marker outlives any gap in which no gateway touches the store (an expired marker
// only counts as a loss: tokens issued before are refused, never accepted)
const EPOCH_TTL_MS = 30 * 24 * 3600_000
// Cluster: at most 5 tries of one command across MOVED/ASK/failover redirections (~0.5 s), then fail
const MAX_REDIRECTIONS = 5

// KEYS: meta, spent. ARGV: hash, curExp, fexp, openid, unionid, appid, created
const CREATE_LUA = `
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'curExp', ARGV[2], 'fexp', ARGV[3],
  'openid', ARGV[4], 'unionid', ARGV[5], 'appid', ARGV[6], 'created', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1`

// KEYS: meta, spent, grace key of the presented hash.
// ARGV: hash, nextHash, payload, now, refreshTtl, graceMs, served appids as '\t<a>\t<b>\t'
// Returns {status, openid, unionid, appid, expiresAt, fexp, created[, payload]}
const ROTATE_LUA = `
local m = redis.call('HMGET', KEYS[1], 'cur', 'curExp', 'fexp', 'revoked', 'openid', 'unionid', 'appid', 'created')
if not m[3] then return {'invalid'} end
if m[4] then return {'revoked'} end
if not string.find(ARGV[7], '\t' .. m[7] .. '\t', 1, true) then return {'foreign', m[7]} end
local now = tonumber(ARGV[4])
local fexp = tonumber(m[3])
local graceMs = tonumber(ARGV[6])
if m[1] == ARGV[1] then
  local curExp = tonumber(m[2])
  if now >= curExp or now >= fexp then return {'expired'} end
  local childExp = math.min(now + tonumber(ARGV[5]), fexp)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], m[2], ARGV[1])
  redis.call('PEXPIREAT', KEYS[2], m[3])
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'curExp', string.format('%d', childExp))
  if graceMs > 0 then
    redis.call('SET', KEYS[3], ARGV[4] .. ':' .. string.format('%d', childExp) .. ':' .. ARGV[2] .. ':' .. ARGV[3], 'PX', graceMs)
  end
  return {'rotated', m[5], m[6], m[7], string.format('%d', childExp), m[3], m[8]}
end
local g = redis.call('GET', KEYS[3])
if g then
  local a = string.find(g, ':', 1, true)
  local b = string.find(g, ':', a + 1, true)
  local c = string.find(g, ':', b + 1, true)
  -- a retry of a lost answer: only while the child it produced is still the family's live token
  if string.sub(g, b + 1, c - 1) == m[1] and now - tonumber(string.sub(g, 1, a - 1)) <= graceMs then
    if now >= fexp then return {'expired'} end
    return {'grace', m[5], m[6], m[7], string.sub(g, a + 1, b - 1), m[3], m[8], string.sub(g, c + 1)}
  end
end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if s and tonumber(s) > now then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  redis.call('HDEL', KEYS[1], 'cur', 'curExp')
  redis.call('DEL', KEYS[2])
  return {'reused'}
end
return {'invalid'}`

// KEYS: meta, spent
const KILL_FAMILY_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  redis.call('HDEL', KEYS[1], 'cur', 'curExp')
end
redis.call('DEL', KEYS[2])
return 1`

// KEYS: deny zset. ARGV: member, until, now, channel, message.
// Keeps the highest `until`, drops past entries, keeps the key's TTL >= the longest entry, then tells every instance.
const DENY_LUA = `
local untilMs = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) < untilMs then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local want = untilMs - now
if want > 0 and redis.call('PTTL', KEYS[1]) < want then redis.call('PEXPIRE', KEYS[1], want) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`

// The state marker: '<id>:<bornAt ms>', written by the first instance that finds none. KEYS: marker.
// ARGV: the value to write if there is none, TTL ms (kept alive by every heartbeat). Returns the marker.
const EPOCH_LUA = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v`

// Login claims: one key per (appId, code) hash, value 'p:<owner>' (claimed), 'd:<outcome>'
// (remembered) or 'r:<outcome>' (a transient failure, for the logins already waiting).
// KEYS: login key. ARGV: owner, ttl ms. Returns {'claimed'} | {'pending'} | {'done', outcome}
const CLAIM_LOGIN_LUA = `
local v = redis.call('GET', KEYS[1])
if v then
  local kind = string.sub(v, 1, 2)
  if kind == 'd:' then return {'done', string.sub(v, 3)} end
  if kind == 'p:' and v ~= 'p:' .. ARGV[1] then return {'pending'} end
end
redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
return {'claimed'}`

// KEYS: login key. ARGV: owner, value ('d:…' or 'r:…'), ttl ms. Only the claim's owner may finish it.
const FINISH_LOGIN_LUA = `
if redis.call('GET', KEYS[1]) ~= 'p:' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`

// KEYS: login key. ARGV: owner.
const RELEASE_LOGIN_LUA = `
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`

interface Scripts {
  wgClaimLogin (key: string, ...argv: string[]): Promise<string[]>
  wgFinishLogin (key: string, ...argv: string[]): Promise<number>
  wgReleaseLogin (key: string, ...argv: string[]): Promise<number>
  wgCreate (meta: string, spent: string, ...argv: string[]): Promise<number>
  wgRotate (meta: string, spent: string, grace: string, ...argv: string[]): Promise<string[]>
  wgKill (meta: string, spent: string): Promise<number>
  wgDeny (zset: string, ...argv: string[]): Promise<number>
  wgEpoch (marker: string, ...argv: string[]): Promise<string>
}

type Message = ['j', string, number] | ['f', string, number] | ['r', string, number] | ['u', string, string, number, number]

function parseMessage (raw: string): Message | null {
  let m: unknown
  try { m = JSON.parse(raw) } catch { return null }
  if (!Array.isArray(m)) return null
  if ((m[0] === 'j' || m[0] === 'f' || m[0] === 'r') && m.length === 3 && typeof m[1] === 'string' && typeof m[2] === 'number') {
    return m as Message
  }
  if (m[0] === 'u' && m.length === 5 && typeof m[1] === 'string' && typeof m[2] === 'string' &&
    typeof m[3] === 'number' && typeof m[4] === 'number') {
    return m as Message
  }
  return null
}

function errText (err: unknown): string {
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
function withoutPassword (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable url)'
  }
}

interface Connections {
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
function connect (config: StoreConfig): Connections {
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

/** Create the Redis store; it connects in the background (await `ready()` to wait for it). */
export function createRedisStore (config: StoreConfig, logger: StoreLogger, opts: StoreOptions = {}): Store {
  const now = opts.now ?? Date.now
  const observe = opts.observe
  const p = config.keyPrefix
  const failOpen = config.failMode === 'open'
  const channel = `${p}revocations`
  // the marker shares the revocations' slot: whatever loses them loses it too
  const denyKey = { jti: `${p}{rv}:jti`, fid: `${p}{rv}:fid`, user: `${p}{rv}:user`, rollback: `${p}{rv}:rollback`, epoch: `${p}{rv}:epoch` }
  const famKeys = (fid: string) => [`${p}{fam:${fid}}:meta`, `${p}{fam:${fid}}:spent`] as const
  const sessionKeyOf = (appid: string, openid: string) => `${p}{u:${appid}:${openid}}:sk`
  const loginKeyOf = (key: string) => `${p}{login:${key}}`
  const ms = (n: number) => String(Math.max(1, Math.round(n)))

  const { main, subscriber, probe, topology, watchFailovers } = connect(config)
  const nodes = config.cluster?.nodes ?? config.sentinel?.nodes ?? [withoutPassword(config.url ?? DEFAULT_REDIS_URL)]
  logger.info({ topology, nodes, ...(config.sentinel !== undefined ? { master: config.sentinel.name } : {}) }, 'redis store: connecting')
  const cmd = main as (Redis | Cluster) & Scripts
  main.defineCommand('wgCreate', { numberOfKeys: 2, lua: CREATE_LUA })
  main.defineCommand('wgRotate', { numberOfKeys: 3, lua: ROTATE_LUA })
  main.defineCommand('wgKill', { numberOfKeys: 2, lua: KILL_FAMILY_LUA })
  main.defineCommand('wgDeny', { numberOfKeys: 1, lua: DENY_LUA })
  main.defineCommand('wgEpoch', { numberOfKeys: 1, lua: EPOCH_LUA })
  main.defineCommand('wgClaimLogin', { numberOfKeys: 1, lua: CLAIM_LOGIN_LUA })
  main.defineCommand('wgFinishLogin', { numberOfKeys: 1, lua: FINISH_LOGIN_LUA })
  main.defineCommand('wgReleaseLogin', { numberOfKeys: 1, lua: RELEASE_LOGIN_LUA })

  const mirror = new RevocationSet() // Redis holds the truth; the mirror only mirrors it
  // Canary rollbacks in force (few: one per rolled-back upstream and config).
  const rollbackKeys = new Set<string>()
  const rollbackListeners: Array<(key: string) => void> = []
  /** Add keys, then tell the listeners about the new ones: each listener sees the whole batch (a resync) in the set. */
  const addRollbacks = (keys: readonly string[]): void => {
    const fresh = keys.filter((key) => !rollbackKeys.has(key))
    for (const key of fresh) rollbackKeys.add(key)
    for (const key of fresh) for (const fn of rollbackListeners) fn(key)
  }
  let closed = false
  let subscribed = false
  let synced = false
  // bumped whenever a connection is lost: a reload started before the loss must not mark the mirror fresh
  let generation = 0
  let waiters: Array<() => void> = []

  const markStale = (why: string): void => {
    generation++
    if (closed) return
    if (synced) logger.warn({ why }, 'redis store: revocation mirror stale')
    synced = false
  }

  const apply = (m: Message): void => {
    if (m[0] === 'j') mirror.addJti(m[1], m[2])
    else if (m[0] === 'f') mirror.addFid(m[1], m[2])
    else if (m[0] === 'r') addRollbacks([m[1]])
    else mirror.addUser(m[1], m[2], m[3], m[4])
  }

  // The state marker this instance last saw (null before the first look).
  let epoch: string | null = null
  /**
   * Read (or, when there is none, write) the state marker. A marker this instance has not seen
   * before, or none at all, means the store's state began then: every token issued before is
   * denied. Seen by a running instance (a Redis restarted empty, a failover to an empty node),
   * that is a loss: error log and onStateLost.
   */
  const checkEpoch = async (): Promise<void> => {
    const fresh = `${randomBytes(9).toString('base64url')}:${now()}`
    const marker = await cmd.wgEpoch(denyKey.epoch, fresh, String(EPOCH_TTL_MS))
    if (marker === epoch) return
    const since = Number(marker.slice(marker.indexOf(':') + 1))
    const bornAt = Number.isFinite(since) ? since : now()
    mirror.denyIssuedBefore(bornAt)
    if (epoch !== null) {
      logger.error({ topology, since: new Date(bornAt).toISOString() },
        'redis store: the store lost its state (state marker gone or replaced); every token issued before then is refused')
      opts.onStateLost?.(bornAt)
    } else if (marker === fresh) {
      logger.warn({ topology, since: new Date(bornAt).toISOString() },
        'redis store: no state marker: a first start on this store, or one that lost its state; tokens issued before now are refused')
    }
    epoch = marker
  }

  /** Full reload of the deny lists into the mirror (additive: revocations are never undone early). */
  const resync = async (): Promise<void> => {
    if (closed || synced || main.status !== 'ready' || !subscribed) return
    const gen = generation
    try {
      await checkEpoch()
      if (gen !== generation || closed) return
      const t = String(now())
      const [jtis, fids, users, rolled] = await Promise.all([
        main.zrangebyscore(denyKey.jti, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(denyKey.fid, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(denyKey.user, t, '+inf', 'WITHSCORES'),
        main.zrangebyscore(denyKey.rollback, t, '+inf')
      ])
      if (gen !== generation || closed) return
      addRollbacks(rolled)
      for (let i = 0; i + 1 < jtis.length; i += 2) mirror.addJti(jtis[i], Number(jtis[i + 1]))
      for (let i = 0; i + 1 < fids.length; i += 2) mirror.addFid(fids[i], Number(fids[i + 1]))
      for (let i = 0; i + 1 < users.length; i += 2) {
        const [appid, openid, cutoff] = users[i].split('\t')
        if (openid !== undefined && cutoff !== undefined) mirror.addUser(appid, openid, Number(cutoff), Number(users[i + 1]))
      }
      synced = true
      logger.info({ jtis: jtis.length / 2, fids: fids.length / 2, users: users.length / 2 }, 'redis store: revocation mirror synchronised')
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
    const s = subscriber()
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
    s.on('message', (ch: string, raw: string) => {
      if (ch !== channel) return
      const m = parseMessage(raw)
      if (m !== null) apply(m)
    })
  }
  startSubscriber()

  // Sentinel, planned failover (SENTINEL FAILOVER): the old master stays up and keeps acknowledging writes,
  // lost when the sentinels turn it into a replica seconds later. Leave it as soon as a sentinel names the new one.
  const stopWatching = watchFailovers?.((host, port) => {
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

  // Cluster: whether the cluster says all its slots are served (cluster_state:ok); always true otherwise.
  let topologyOk = true
  // A half-open socket never emits 'close': probe both connections, treat a failure as a loss.
  const heartbeat = setInterval(() => {
    if (closed) return
    Promise.all([probe(), sub.ping()]).then(([ok]) => {
      if (ok !== topologyOk) {
        if (ok) logger.info({ topology }, 'redis store: cluster state ok again')
        else logger.warn({ topology }, 'redis store: cluster state is not ok (slots without a reachable master)')
      }
      topologyOk = ok
      // a store emptied without this instance losing its connections (FLUSHALL, an operator) is seen here
      return synced ? checkEpoch() : resync()
    }).catch((err: unknown) => {
      if (synced) markStale('heartbeat failed: ' + errText(err))
    })
  }, HEARTBEAT_MS)
  heartbeat.unref()
  const sweeper = setInterval(() => mirror.sweep(now()), SWEEP_MS)
  sweeper.unref()

  /** Run one Redis operation; any failure becomes STORE_UNAVAILABLE (the cause is for the log only). */
  const op = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    if (closed) throw new GatewayError('STORE_UNAVAILABLE', { detail: 'redis store is closed' })
    const t0 = performance.now()
    try {
      const v = await fn()
      observe?.(name, (performance.now() - t0) / 1000, true)
      return v
    } catch (err) {
      observe?.(name, (performance.now() - t0) / 1000, false)
      throw new GatewayError('STORE_UNAVAILABLE', { detail: `redis ${name}: ${errText(err)}`, cause: err })
    }
  }

  const deny = (zset: string, member: string, untilMs: number, message: Message): Promise<number> =>
    cmd.wgDeny(zset, member, String(untilMs), String(now()), channel, JSON.stringify(message))

  const toRecord = (fid: string, r: string[]): RefreshRecord => {
    const rec: RefreshRecord = {
      fid,
      openid: r[1],
      appid: r[3],
      expiresAt: Number(r[4]),
      familyExpiresAt: Number(r[5]),
      createdAt: Number(r[6])
    }
    if (r[2] !== '' && r[2] !== undefined && r[2] !== null) rec.unionid = r[2]
    return rec
  }

  const revokeFamily = async (fid: string, untilMs: number): Promise<void> => {
    const [meta, spent] = famKeys(fid)
    await op('revokeFamily', async () => {
      await cmd.wgKill(meta, spent)
      await deny(denyKey.fid, fid, untilMs, ['f', fid, untilMs])
    })
    mirror.addFid(fid, untilMs) // at once on this instance, whatever pub/sub does
  }

  return {
    kind: 'redis',

    async setSessionKey (appId, openid, sessionKey, ttlMs) {
      await op('setSessionKey', () => main.set(sessionKeyOf(appId, openid), sessionKey, 'PX', Math.max(1, Math.round(ttlMs))))
    },

    async getSessionKey (appId, openid) {
      return await op('getSessionKey', () => main.get(sessionKeyOf(appId, openid)))
    },

    async createFamily (hash, record) {
      const [meta, spent] = famKeys(record.fid)
      await op('createFamily', () => cmd.wgCreate(meta, spent, hash, String(record.expiresAt), String(record.familyExpiresAt),
        record.openid, record.unionid ?? '', record.appid, String(record.createdAt)))
    },

    async rotateRefresh (input) {
      const [meta, spent] = famKeys(input.fid)
      const graceKey = `${p}{fam:${input.fid}}:grace:${input.hash}`
      const r = await op('rotateRefresh', () => cmd.wgRotate(meta, spent, graceKey, input.hash, input.nextHash, input.grace,
        String(input.nowMs), String(input.refreshTtlMs), String(input.graceMs), `\t${input.appids.join('\t')}\t`))
      let res: RotateResult
      switch (r[0]) {
        case 'rotated': res = { status: 'rotated', record: toRecord(input.fid, r) }; break
        case 'grace': res = { status: 'grace', record: toRecord(input.fid, r), grace: r[7] }; break
        case 'reused':
          await revokeFamily(input.fid, input.nowMs + input.denyMs)
          return { status: 'reused', fid: input.fid }
        case 'foreign': return { status: 'foreign', appid: r[1] }
        case 'expired': return { status: 'expired' }
        case 'revoked': return { status: 'revoked' }
        default: return { status: 'invalid' }
      }
      // logout-all ends every family born before the cutoff (read from the local mirror)
      if (res.record.createdAt < mirror.userCutoff(res.record.appid, res.record.openid)) {
        await revokeFamily(input.fid, input.nowMs + input.denyMs)
        return { status: 'revoked' }
      }
      return res
    },

    revokeFamily,

    async revokeAccessToken (jti, untilMs) {
      await op('revokeAccessToken', () => deny(denyKey.jti, jti, untilMs, ['j', jti, untilMs]))
      mirror.addJti(jti, untilMs)
    },

    async revokeUserBefore (appId, openid, cutoffMs, untilMs) {
      const member = `${appId}\t${openid}\t${cutoffMs}`
      await op('revokeUserBefore', () => deny(denyKey.user, member, untilMs, ['u', appId, openid, cutoffMs, untilMs]))
      mirror.addUser(appId, openid, cutoffMs, untilMs)
    },

    async claimLogin (key, owner, ttlMs) {
      const r = await op('claimLogin', () => cmd.wgClaimLogin(loginKeyOf(key), owner, ms(ttlMs)))
      if (r[0] === 'done') return { status: 'done', outcome: r[1] }
      return r[0] === 'claimed' ? { status: 'claimed' } : { status: 'pending' }
    },

    async peekLogin (key) {
      const v = await op('peekLogin', () => main.get(loginKeyOf(key)))
      if (v === null) return { status: 'none' }
      if (v.startsWith('d:')) return { status: 'done', outcome: v.slice(2) }
      if (v.startsWith('r:')) return { status: 'failed', outcome: v.slice(2) }
      return { status: 'pending' }
    },

    async finishLogin (key, owner, outcome, remember, ttlMs) {
      const value = (remember ? 'd:' : 'r:') + outcome
      return await op('finishLogin', () => cmd.wgFinishLogin(loginKeyOf(key), owner, value, ms(ttlMs))) === 1
    },

    async releaseLogin (key, owner) {
      await op('releaseLogin', () => cmd.wgReleaseLogin(loginKeyOf(key), owner))
    },

    async announceRollback (key, untilMs) {
      await op('announceRollback', () => deny(denyKey.rollback, key, untilMs, ['r', key, untilMs]))
      addRollbacks([key])
    },

    rollbacks: () => rollbackKeys,

    onRollback (listener) {
      rollbackListeners.push(listener)
    },

    redis: main,

    isRevoked (subject) {
      if (!synced && !failOpen) {
        throw new GatewayError('STORE_UNAVAILABLE', { detail: 'revocation mirror not synchronised with redis' })
      }
      return mirror.has(subject)
    },

    async ping () {
      return await op('ping', async () => {
        const t0 = performance.now()
        await main.ping()
        return performance.now() - t0
      })
    },

    healthy () {
      return !closed && synced && topologyOk && main.status === 'ready'
    },

    ready (timeoutMs = 5000) {
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

    async close () {
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
