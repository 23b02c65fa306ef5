import { execFile } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { DEMO_JWT_SECRET, DEMO_WECHAT_SECRET } from '../src/config/demo.js'
import { loadConfigFile } from '../src/config/load.js'
import { SEVEN_MISTAKES, SEVEN_PROBLEMS } from './helpers/bad-config.js'
import { baseConfig, merge, startGateway, TEST_JWT_SECRET } from './helpers/gateway.js'

const CLI = ['--import', 'tsx', 'src/cli/main.ts']

function run (args: string[], env: Record<string, string> = {}, timeout = 30_000): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    // timeout: a `serve` that wrongly starts fails the test instead of hanging it
    execFile(process.execPath, [...CLI, ...args], { env: { PATH: process.env.PATH, ...env }, timeout }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr })
    })
  })
}

t.test('wegate check: exit 0 on the default gateway.yaml, as the demo or with JWT_SECRET set', async (t) => {
  const demo = await run(['check', '-c', 'gateway.yaml', '--demo'])
  t.equal(demo.code, 0, demo.stderr)
  t.match(demo.stdout, /gateway\.yaml: ok \(2 routes, sha256 [0-9a-f]{16}\)/)
  t.equal(demo.stderr, '', 'the demo AppSecret goes to the local emulator: no warning')
  const prod = await run(['check', '-c', 'gateway.yaml'], { JWT_SECRET: 'a-real-secret-from-the-vault-0123456789' })
  t.equal(prod.code, 0, prod.stderr)
})

const DEMO_REFUSAL = /tokens\.keys\[0\]\.secret: is the repository's public demo secret: anyone can sign tokens with it\. Set JWT_SECRET/

t.test('the demo secrets are gateway.yaml\'s defaults (one constant in the code, the same value in the file)', async (t) => {
  const { config } = await loadConfigFile('gateway.yaml', {})
  t.equal(config.tokens.keys[0].secret, DEMO_JWT_SECRET)
  t.equal(config.wechat.apps[0].secret, DEMO_WECHAT_SECRET)
})

t.test('regression: wegate serve without --demo accepted the public demo JWT secret, so anyone could forge tokens', async (t) => {
  const r = await run(['serve', '-c', 'gateway.yaml'], { PORT: '0', ADMIN_PORT: '0' })
  t.equal(r.code, 1, 'refuses to start')
  t.match(r.stderr, /refusing to start, gateway\.yaml uses the repository's public demo JWT secret/)
  t.match(r.stderr, DEMO_REFUSAL)
  t.notMatch(r.stdout, /wegate listening/, 'never listened')
})

t.test('wegate check reports the demo JWT secret as a problem (exit 1) unless --demo, in any key of the list', async (t) => {
  const r = await run(['check', '-c', 'gateway.yaml'])
  t.equal(r.code, 1)
  t.match(r.stderr, /gateway\.yaml: 1 problem\n/)
  t.match(r.stderr, DEMO_REFUSAL)

  // Every key verifies: a demo key kept second during a rotation still lets anyone sign tokens.
  const dir = await mkdtemp(join(tmpdir(), 'wegate-check-'))
  const file = join(dir, 'rotation.yaml')
  await writeFile(file, stringify(merge(baseConfig(), {
    tokens: { keys: [{ kid: 'k2', secret: TEST_JWT_SECRET }, { kid: 'k1', secret: DEMO_JWT_SECRET }] }
  })))
  const rotated = await run(['check', '-c', file])
  t.equal(rotated.code, 1)
  t.match(rotated.stderr, /tokens\.keys\[1\]\.secret: is the repository's public demo secret/)
})

t.test('the demo AppSecret with a WeChat that is not a local emulator is a warning (exit 0)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-check-'))
  const file = join(dir, 'wechat.yaml')
  await writeFile(file, stringify(merge(baseConfig(), { wechat: { baseUrl: 'https://api.weixin.qq.com' } })))
  const r = await run(['check', '-c', file])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /: ok \(/)
  t.match(r.stderr, /warning: wechat\.apps\[0\]\.secret: is the emulator's demo AppSecret but wechat\.baseUrl \(https:\/\/api\.weixin\.qq\.com\) is not a local emulator.*Set WX_SECRET/)
})

t.test('a reload that brings in the demo JWT secret is refused; the running config keeps serving', async (t) => {
  const { gateway, logs } = await startGateway(t)
  const before = gateway.snapshot().hash
  const dir = await mkdtemp(join(tmpdir(), 'wegate-reload-'))
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), { tokens: { keys: [{ kid: 'k1', secret: DEMO_JWT_SECRET }] } })))
  const result = await gateway.reload(file)
  t.equal(result.status, 'refused')
  t.match(result.status === 'refused' ? result.problems.join('\n') : '', DEMO_REFUSAL)
  t.equal(gateway.snapshot().hash, before, 'still serving the last good config')
  t.ok(logs.lines.some((l) => String(l.msg).startsWith('config reload refused')))
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

t.test('regression: check showed two of seven mistakes; now every one, with its line, at check, start and reload alike', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-check-'))
  const file = join(dir, 'seven.yaml')
  await writeFile(file, SEVEN_MISTAKES)
  const listed = SEVEN_PROBLEMS.map((p) => `  ${p}\n`).join('')

  const checked = await run(['check', '-c', file])
  t.equal(checked.code, 1)
  t.equal(checked.stderr, `${file}: 7 problems\n${listed}`)

  const served = await run(['serve', '-c', file], { PORT: '0', ADMIN_PORT: '0' })
  t.equal(served.code, 1)
  t.equal(served.stderr, `wegate: refusing to start, ${file} has 7 problem(s):\n${listed}`)

  const { gateway } = await startGateway(t)
  const reloaded = await gateway.reload(file)
  t.same(reloaded.status === 'refused' ? reloaded.problems : reloaded, SEVEN_PROBLEMS, 'a reload refuses it with the same list (and logs it)')
})

t.test('regression: --help on every command prints its usage and does nothing else (serve --help started the gateway)', async (t) => {
  // With a real secret and free ports, a serve that ignored --help would listen and never exit (killed: code null).
  const env = { JWT_SECRET: 'a-real-secret-from-the-vault-0123456789', PORT: '0', ADMIN_PORT: '0' }
  const cases: Array<[string[], RegExp]> = [
    [['serve', '-c', 'gateway.yaml', '--help'], /^usage: wegate serve \[-c gateway\.yaml\] \[--demo\]\n/],
    [['serve', '-h'], /^usage: wegate serve /],
    [['check', '--help'], /^usage: wegate check \[-c gateway\.yaml\] \[--demo\]\n/],
    [['emulator', '--port', '0', '--help'], /^usage: wegate emulator \[--port 9400\]/],
    [['rollout', 'status', '--help'], /^usage: wegate rollout status\|pause\|resume\|promote\|abort \[route\]/],
    [['--help'], /^usage: wegate <command> \[options\]\n/],
    [[], /^usage: wegate <command>/]
  ]
  // independent processes: run side by side
  const results = await Promise.all(cases.map(async ([args]) => await run(args, env, 20_000)))
  for (const [i, [args, usage]] of cases.entries()) {
    const r = results[i]
    t.equal(r.code, 0, `wegate ${args.join(' ')}: exit 0`)
    t.match(r.stdout, usage, `wegate ${args.join(' ')}: its usage`)
    t.equal(r.stderr, '', 'nothing else: no validation, no listener')
    t.notMatch(r.stdout, /listening|ok \(/)
  }
})

t.test('regression: wegate --version printed "unknown command"; it prints the package version', async (t) => {
  const { version } = JSON.parse(await readFile('package.json', 'utf8')) as { version: string }
  const r = await run(['--version'])
  t.equal(r.code, 0)
  t.equal(r.stdout, `wegate ${version}\n`)
})

t.test('regression: an unknown option, or another command\'s, is refused with the command\'s usage (exit 2)', async (t) => {
  const cases: Array<[string[], string, string]> = [
    [['check', '--port', '9400'], 'check', "unknown option '--port'"], // the emulator's option: check validated ./gateway.yaml
    [['serve', '--app', 'wx1:s'], 'serve', "unknown option '--app'"],
    [['emulator', '-c', 'gateway.yaml'], 'emulator', "unknown option '-c'"],
    [['emulator', '--demo'], 'emulator', "unknown option '--demo'"],
    [['serve', '--bogus'], 'serve', "unknown option '--bogus'"],
    [['check', 'a.yaml', 'b.yaml'], 'check', "unexpected argument 'b.yaml'"]
  ]
  const env = { JWT_SECRET: 'a-real-secret-from-the-vault-0123456789', PORT: '0', ADMIN_PORT: '0' }
  const results = await Promise.all(cases.map(async ([args]) => await run(args, env, 20_000)))
  for (const [i, [args, command, message]] of cases.entries()) {
    const r = results[i]
    t.equal(r.code, 2, `wegate ${args.join(' ')}: exit 2`)
    t.equal(r.stdout, '')
    t.match(r.stderr, `wegate ${command}: ${message}\nusage: wegate ${command} `)
  }
})

t.test('regression: check said ok for a key file serve cannot read; check, start and reload now refuse it with the same list and its line', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-check-'))
  const file = join(dir, 'keys.yaml')
  const missing = join(dir, 'missing.pem')
  await writeFile(file, stringify(merge(baseConfig(), { tokens: { algorithm: 'ES256', keys: [{ kid: 'k1', privateKeyFile: missing }] } })))
  const checked = await run(['check', '-c', file])
  t.equal(checked.code, 1)
  t.match(checked.stderr, new RegExp(`^${file}: 1 problem\n {2}tokens\\.keys\\[0\\]: cannot read key: ENOENT[^\n]*\\(line \\d+\\)\n$`))
  const served = await run(['serve', '-c', file], { PORT: '0', ADMIN_PORT: '0' })
  t.equal(served.code, 1)
  const listed = checked.stderr.split('\n').slice(1, -1).map((l) => l.slice(2))
  t.equal(served.stderr, `wegate: refusing to start, ${file} has 1 problem(s):\n${listed.map((l) => `  ${l}\n`).join('')}`)
  const { gateway } = await startGateway(t)
  const reloaded = await gateway.reload(file)
  t.same(reloaded.status === 'refused' ? reloaded.problems : reloaded, listed, 'a reload refuses it with the same list')
})
