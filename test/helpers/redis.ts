/**
 * Throw-away Redis topologies on free 127.0.0.1 ports for one test: a single
 * redis-server, a Redis Cluster (startCluster) and a Sentinel setup
 * (startSentinel), all real processes. Never touches 6379; no persistence;
 * files in a temp dir; killed by stop() (use t.teardown(stop)).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { createServer, connect } from 'node:net'
import { once } from 'node:events'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Cluster, Redis } from 'ioredis'
import type { StoreConfig } from '../../src/config/schema.js'

/** What the store tests need from any topology. */
export interface TestTopology {
  name: 'single' | 'cluster' | 'sentinel'
  /** The `store` config fields that select this topology (for a StoreConfig or gateway.yaml). */
  store: Pick<StoreConfig, 'url' | 'cluster' | 'sentinel'>
  /** A client that finds keys the way the gateway does (a Cluster on a cluster); disconnected at stop. */
  client: () => Redis | Cluster
  /** One plain client per master (SCAN, CLIENT KILL); disconnected at stop. */
  masters: () => Promise<Redis[]>
  stop: () => Promise<void>
}

export interface TestRedis extends TestTopology {
  url: string
  port: number
  /** Kill the server (idempotent). */
  stop (): Promise<void>
  /** Kill and start again on the same port (empty data). */
  restart (): Promise<void>
}

/** A port the OS says is free right now (bind 0, read it, close). */
export async function freePort (): Promise<number> {
  const srv = createServer()
  srv.listen(0, '127.0.0.1')
  await once(srv, 'listening')
  const addr = srv.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0
  await new Promise<void>((resolve) => srv.close(() => resolve()))
  return port
}

/** One PING over a raw socket; resolves true on +PONG. */
function ping (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ port, host: '127.0.0.1' })
    const done = (ok: boolean) => { sock.destroy(); resolve(ok) }
    sock.setTimeout(500, () => done(false))
    sock.once('error', () => done(false))
    sock.once('connect', () => sock.write('PING\r\n'))
    sock.once('data', (buf) => done(buf.toString().startsWith('+PONG')))
  })
}

// Every redis-server still running when this process exits without its teardown (a crash, an uncaught
// error) is killed with it, so no orphan keeps a port or a temp dir.
const running = new Set<ChildProcess>()
const tempDirs = new Set<string>()
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL')
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true })
})

/** A temp dir for one topology's files, removed at stop (or when this process exits). */
async function tempDir (name: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `wegate-${name}-`))
  tempDirs.add(dir)
  return dir
}

async function removeDir (dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true })
  tempDirs.delete(dir)
}

/** spawn redis-server, tracked in `running` until it exits. */
function redisServer (args: string[]): ChildProcess {
  const child = spawn('redis-server', args, { stdio: 'ignore' })
  running.add(child)
  child.once('exit', () => running.delete(child))
  child.on('error', () => {}) // surfaced as "did not answer PING" by waitReady
  return child
}

function spawnServer (port: number): ChildProcess {
  return redisServer([
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'
  ])
}

async function waitReady (port: number, child: ChildProcess): Promise<void> {
  // up to ~5 s: redis-server usually answers within 50 ms
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with ${child.exitCode}`)
    if (await ping(port)) return
    await sleep(50)
  }
  throw new Error(`redis-server on port ${port} did not answer PING`)
}

async function kill (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGKILL')
  await exited
}

/** A client the helper disconnects at stop. */
function tracked<T extends Redis | Cluster> (list: Array<Redis | Cluster>, c: T): T {
  c.on('error', () => {})
  list.push(c)
  return c
}

/** Spawn redis-server on a free port and wait until it answers PING. */
export async function startRedis (): Promise<TestRedis> {
  const port = await freePort()
  let child = spawnServer(port)
  await waitReady(port, child)
  const clients: Array<Redis | Cluster> = []
  const url = `redis://127.0.0.1:${port}`
  return {
    name: 'single',
    store: { url },
    url,
    port,
    client: () => tracked(clients, new Redis(url)),
    masters: async () => [tracked(clients, new Redis(url))],
    async stop () {
      for (const c of clients.splice(0)) c.disconnect()
      await kill(child)
    },
    async restart () {
      await kill(child)
      child = spawnServer(port)
      await waitReady(port, child)
    }
  }
}

/** Run a redis-cli command to completion; rejects with its output on a non-zero exit. */
async function redisCli (args: string[]): Promise<string> {
  const child = spawn('redis-cli', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (b: Buffer) => { out += b.toString() })
  child.stderr.on('data', (b: Buffer) => { out += b.toString() })
  const [code] = await once(child, 'exit') as [number | null]
  if (code !== 0) throw new Error(`redis-cli ${args.join(' ')} exited with ${String(code)}:\n${out}`)
  return out
}

/** Poll `check` every 50 ms until it holds; throws `what` after `limitMs`. */
async function until (what: string, limitMs: number, check: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + limitMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

/** One command on a short-lived connection to 127.0.0.1:port (no retries, no queue). */
async function command (port: number, ...args: string[]): Promise<unknown> {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0, connectTimeout: 1000 })
  r.on('error', () => {})
  try {
    await r.connect()
    return await r.call(args[0], ...args.slice(1))
  } finally {
    r.disconnect()
  }
}

interface Node {
  port: number
  args: string[]
  child: ChildProcess
}

async function startNode (port: number, args: string[]): Promise<Node> {
  const child = redisServer(args)
  await waitReady(port, child)
  return { port, args, child }
}

// no persistence; a replica's full sync starts at once (the default waits 5 s for more replicas)
const serverArgs = (port: number, dir: string): string[] =>
  ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning', '--dir', dir,
    '--repl-diskless-sync-delay', '0']

export interface TestCluster extends TestTopology {
  /** host:port of every master, for `store.cluster.nodes`. */
  nodes: string[]
  ports: number[]
  /** Kill one node (index into ports). */
  kill: (i: number) => Promise<void>
  /** Start a killed node again: same port and cluster config, so it rejoins with its slots (empty). */
  revive: (i: number) => Promise<void>
  /** Wait until every running node reports cluster_state:ok. */
  waitOk: () => Promise<void>
  /** Wait until every running node reports cluster_state:fail (after a master is lost: node timeout + gossip). */
  waitFail: () => Promise<void>
  /** Kill every node (idempotent). */
  stop: () => Promise<void>
  /** Kill every node and start them again (same cluster, empty data). */
  restart: () => Promise<void>
}

/**
 * A real Redis Cluster of `masters` redis-server processes (no replicas) on free
 * ports, created with `redis-cli --cluster create`, files in a temp dir. Node
 * timeout 1 s, so that a lost master turns the cluster state to fail quickly.
 */
export async function startCluster (masters = 3): Promise<TestCluster> {
  const dir = await tempDir('cluster')
  const ports: number[] = []
  const nodes: Node[] = []
  for (let i = 0; i < masters; i++) {
    const port = await freePort()
    // the bus port is given explicitly: port + 10000 may not exist or be free
    const bus = await freePort()
    ports.push(port)
    nodes.push(await startNode(port, [...serverArgs(port, dir), '--cluster-enabled', 'yes', '--cluster-port', String(bus),
      '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', '1000']))
  }
  const waitState = async (state: 'ok' | 'fail'): Promise<void> => {
    for (const n of nodes) {
      if (n.child.exitCode !== null || n.child.signalCode !== null) continue
      await until(`cluster_state:${state} on ${n.port}`, 15_000, async () =>
        String(await command(n.port, 'CLUSTER', 'INFO')).includes(`cluster_state:${state}`))
    }
  }
  const clients: Array<Redis | Cluster> = []
  const addresses = ports.map((p) => `127.0.0.1:${p}`)
  const cluster: TestCluster = {
    name: 'cluster',
    store: { cluster: { nodes: addresses, tls: false } },
    nodes: addresses,
    ports,
    client: () => tracked(clients, new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })))),
    masters: async () => ports.map((port) => tracked(clients, new Redis({ host: '127.0.0.1', port }))),
    async kill (i) { await kill(nodes[i].child) },
    async revive (i) {
      const n = nodes[i]
      nodes[i] = await startNode(n.port, n.args)
    },
    waitOk: () => waitState('ok'),
    waitFail: () => waitState('fail'),
    async stop () {
      for (const c of clients.splice(0)) c.disconnect()
      await Promise.all(nodes.map((n) => kill(n.child)))
    },
    async restart () {
      await Promise.all(nodes.map((n) => kill(n.child)))
      for (let i = 0; i < nodes.length; i++) await cluster.revive(i)
      await cluster.waitOk()
    }
  }
  try {
    await redisCli(['--cluster', 'create', ...cluster.nodes, '--cluster-replicas', '0', '--cluster-yes'])
    await cluster.waitOk()
  } catch (err) {
    await cluster.stop()
    throw err
  }
  const stop = cluster.stop
  cluster.stop = async () => {
    await stop()
    await removeDir(dir)
  }
  return cluster
}

export interface TestSentinel extends TestTopology {
  /** host:port of the sentinel, for `store.sentinel.nodes`. */
  nodes: string[]
  /** Port of the current master, as the sentinel reports it. */
  masterPort: () => Promise<number>
  /** Wait until the replica has everything the master wrote (so a failover loses nothing). */
  waitReplicated: () => Promise<void>
  /** Kill the current master's process; the sentinel promotes the replica. `promoted`: the new master's port. */
  killMaster: () => Promise<{ old: number, promoted: Promise<number> }>
  /** A planned failover (SENTINEL FAILOVER): the old master stays up and is turned into a replica later. */
  failover: () => Promise<{ old: number, promoted: Promise<number> }>
}

/**
 * A real Sentinel setup: one master, one replica (`--replicaof`) and one
 * sentinel (`redis-server sentinel.conf --sentinel`) monitoring it with quorum 1,
 * down-after 500 ms and failover-timeout 2 s, so a failover takes about a second.
 */
export async function startSentinel (): Promise<TestSentinel> {
  const name = 'mymaster'
  const dir = await tempDir('sentinel')
  const servers = new Map<number, Node>()
  const clients: Array<Redis | Cluster> = []
  const procs: ChildProcess[] = []
  const stop = async (): Promise<void> => {
    for (const c of clients.splice(0)) c.disconnect()
    await Promise.all([...procs, ...[...servers.values()].map((n) => n.child)].map(kill))
    await removeDir(dir)
  }
  try {
    const mPort = await freePort()
    servers.set(mPort, await startNode(mPort, serverArgs(mPort, dir)))
    const rPort = await freePort()
    servers.set(rPort, await startNode(rPort, [...serverArgs(rPort, dir), '--replicaof', '127.0.0.1', String(mPort)]))
    await until('the replica to sync', 10_000, async () => /master_link_status:up/.test(String(await command(rPort, 'INFO', 'replication'))))
    const sPort = await freePort()
    const conf = join(dir, 'sentinel.conf')
    // the sentinel rewrites its config file: it must be writable
    await writeFile(conf, [
      `port ${sPort}`, 'bind 127.0.0.1', `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${mPort} 1`,
      `sentinel down-after-milliseconds ${name} 500`,
      `sentinel failover-timeout ${name} 2000`,
      `sentinel parallel-syncs ${name} 1`, ''
    ].join('\n'))
    const sentinel = redisServer([conf, '--sentinel', '--loglevel', 'warning'])
    procs.push(sentinel)
    await waitReady(sPort, sentinel)
    // it can fail over only once it knows the replica (from the master's INFO)
    await until('the sentinel to see the replica', 10_000, async () => {
      const replicas = await command(sPort, 'SENTINEL', 'REPLICAS', name) as string[][]
      return replicas.some((r) => r.includes(String(rPort)) && !/s_down|disconnected/.test(r.join(' ')))
    })
    const masterPort = async (): Promise<number> => {
      const addr = await command(sPort, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name) as [string, string]
      return Number(addr[1])
    }
    const promotion = async (old: number): Promise<number> => {
      let now = old
      await until('the sentinel to promote the replica', 15_000, async () => { now = await masterPort(); return now !== old })
      return now
    }
    const nodes = [`127.0.0.1:${sPort}`]
    return {
      name: 'sentinel',
      store: { sentinel: { name, nodes, tls: false } },
      nodes,
      // a sentinel-aware client: always talks to the current master
      client: () => tracked(clients, new Redis({ sentinels: [{ host: '127.0.0.1', port: sPort }], name })),
      masters: async () => [tracked(clients, new Redis({ host: '127.0.0.1', port: await masterPort() }))],
      masterPort,
      async waitReplicated () {
        const m = await masterPort()
        const other = [...servers.keys()].find((p) => p !== m) as number
        await until('the replica to catch up', 10_000, async () => {
          const offset = (info: unknown, field: string) => Number(new RegExp(`^${field}:(\\d+)`, 'm').exec(String(info))?.[1] ?? -1)
          const mi = await command(m, 'INFO', 'replication')
          const ri = await command(other, 'INFO', 'replication')
          return offset(mi, 'master_repl_offset') === offset(ri, 'slave_repl_offset')
        })
      },
      async killMaster () {
        const old = await masterPort()
        await kill(servers.get(old)!.child)
        return { old, promoted: promotion(old) }
      },
      async failover () {
        const old = await masterPort()
        await command(sPort, 'SENTINEL', 'FAILOVER', name)
        return { old, promoted: promotion(old) }
      },
      stop
    }
  } catch (err) {
    await stop()
    throw err
  }
}
