/**
 * Build a real gateway on real sockets (port 0) from a config object, the way
 * `wegate serve` does, and tear it down with the test.
 */
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { stringify } from 'yaml'
import { buildGateway, type Gateway, type GatewayDeps } from '../../src/app.js'
import { parseConfig, hashText } from '../../src/config/load.js'
import { createLogger } from '../../src/log.js'

export interface TestContext {
  teardown: (fn: () => unknown) => void
}

export const TEST_JWT_SECRET = 'test-secret-0123456789abcdef-0123456789'

/** A minimal valid config as a plain object; tests override pieces. */
export function baseConfig (): Record<string, unknown> {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    admin: { host: '127.0.0.1', port: 0 },
    store: { type: 'memory' },
    wechat: { baseUrl: 'http://127.0.0.1:9', timeout: '2s', apps: [{ appId: 'wx00000000000demo0', secret: 'demo-secret' }] },
    tokens: { keys: [{ kid: 'k1', secret: TEST_JWT_SECRET }] },
    shutdown: { delay: '0s', timeout: '5s' },
    logging: { level: 'info' },
    routes: []
  }
}

/** A clock for buildGateway's `now`: time moves only when the test says so. */
export interface TestClock {
  now: () => number
  /** Move the clock forward by `ms`. */
  advance: (ms: number) => void
}

export function testClock (start = Date.now()): TestClock {
  let t = start
  return { now: () => t, advance: (ms) => { t += ms } }
}

/** baseConfig() with `patch`, written to a fresh temporary gateway.yaml (for the real CLI); returns its path. */
export async function writeConfigFile (patch: Record<string, unknown> = {}): Promise<string> {
  const file = join(await mkdtemp(join(tmpdir(), 'wegate-test-')), 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), patch)))
  return file
}

/** Deep-merge plain objects (arrays replace). */
export function merge (base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(patch)) {
    const b = out[k]
    out[k] = isPlain(v) && isPlain(b) ? merge(b, v) : v
  }
  return out
}

function isPlain (v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** Collects pino's NDJSON lines for assertions about what was (not) logged. */
export class LogCapture extends Writable {
  readonly lines: Array<Record<string, unknown>> = []
  readonly raw: string[] = []
  override _write (chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line === '') continue
      this.raw.push(line)
      this.lines.push(JSON.parse(line) as Record<string, unknown>)
    }
    cb()
  }

  text (): string { return this.raw.join('\n') }
}

export interface StartedGateway {
  gateway: Gateway
  url: string
  adminUrl: string
  logs: LogCapture
}

export async function startGateway (t: TestContext, patch: Record<string, unknown> = {}, deps: GatewayDeps & {
  /** Called after build, before listen: register extra test routes. */
  before?: (gw: Gateway) => void | Promise<void>
} = {}): Promise<StartedGateway> {
  const text = stringify(merge(baseConfig(), patch))
  const config = parseConfig(text, {})
  const logs = new LogCapture()
  const logger = deps.logger ?? createLogger({ level: config.logging.level, destination: logs })
  const gateway = await buildGateway({ config, hash: hashText(text), fileHash: hashText(text), file: 'test.yaml' }, { ...deps, logger })
  if (deps.before !== undefined) await deps.before(gateway)
  const { publicUrl, adminUrl } = await gateway.listen()
  t.teardown(async () => await gateway.shutdown())
  return { gateway, url: publicUrl, adminUrl, logs }
}
