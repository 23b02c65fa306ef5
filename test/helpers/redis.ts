/**
 * Start a throw-away redis-server on a free 127.0.0.1 port for one test.
 * Never touches 6379; no persistence; killed by stop() (use t.teardown(stop)).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'

export interface TestRedis {
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

function spawnServer (port: number): ChildProcess {
  const child = spawn('redis-server', [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--loglevel', 'warning'
  ], { stdio: 'ignore' })
  child.on('error', () => {}) // surfaced as "did not answer PING" below
  return child
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

/** Spawn redis-server on a free port and wait until it answers PING. */
export async function startRedis (): Promise<TestRedis> {
  const port = await freePort()
  let child = spawnServer(port)
  await waitReady(port, child)
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    stop: () => kill(child),
    async restart () {
      await kill(child)
      child = spawnServer(port)
      await waitReady(port, child)
    }
  }
}
