import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { baseConfig, merge } from './helpers/gateway.js'

const CLI = ['--import', 'tsx', 'src/cli/main.ts']

function run (args: string[], env: Record<string, string> = {}): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...CLI, ...args], { env: { PATH: process.env.PATH, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr })
    })
  })
}

t.test('wegate check: exit 0 on the default gateway.yaml', async (t) => {
  const r = await run(['check', '-c', 'gateway.yaml'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /gateway\.yaml: ok \(2 routes, sha256 [0-9a-f]{16}\)/)
})

t.test('wegate check: exit 1 listing every problem with its path', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-check-'))
  const file = join(dir, 'bad.yaml')
  await writeFile(file, stringify(merge(baseConfig(), {
    wechat: { apps: [{ appId: 'wx1', secret: '${WX_SECRET}' }] },
    routes: [
      { name: 'a', prefix: '/a', upstreams: [{ name: 's', url: 'http://127.0.0.1:1', weight: 1 }] },
      { name: 'b', prefix: '/b', upstreams: [{ name: 's', url: 'http://127.0.0.1:1', weight: -1 }] }
    ]
  })))
  const r = await run(['check', '-c', file])
  t.equal(r.code, 1)
  t.match(r.stderr, /2 problems/)
  t.match(r.stderr, /routes\[1\]\.upstreams\[0\]\.weight: must be >= 0 \(line \d+\)/)
  t.match(r.stderr, /wechat\.apps\[0\]\.secret: environment variable WX_SECRET is not set/)

  const withEnv = await run(['check', '-c', file], { WX_SECRET: 'x' })
  t.equal(withEnv.code, 1)
  t.notMatch(withEnv.stderr, /WX_SECRET/, 'set in the environment: no longer a problem')
})

t.test('wegate check: WEGATE_CONFIG names the file; a missing file is a clear error', async (t) => {
  const r = await run(['check'], { WEGATE_CONFIG: '/nonexistent.yaml' })
  t.equal(r.code, 1)
  t.match(r.stderr, /\/nonexistent\.yaml: 1 problem\n {2}\(file\): cannot read file: ENOENT/)
})

t.test('wegate serve refuses a bad config with exit 1; unknown commands exit 2', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-serve-'))
  const file = join(dir, 'bad.yaml')
  await writeFile(file, 'listen: { port: banana }\n')
  const r = await run(['serve', '-c', file])
  t.equal(r.code, 1)
  t.match(r.stderr, /refusing to start/)
  t.match(r.stderr, /listen\.port: must be an integer/)
  const u = await run(['frobnicate'])
  t.equal(u.code, 2)
  t.match(u.stderr, /unknown command 'frobnicate'/)
})
