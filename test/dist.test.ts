/**
 * What the Dockerfile relies on, checked here since Docker cannot run on this
 * machine: the compiled dist/ runs with production dependencies only
 * (`npm ci --omit=dev`), as an unprivileged user, refuses the default
 * gateway.yaml's public demo JWT secret, starts on it once JWT_SECRET is set
 * (as the Kubernetes Secret does), answers its probes, and drains on SIGTERM with exit 0.
 * And package.json's dependencies are exactly the packages dist/ imports (no
 * unused package in the image, none missing from it).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { chmodSync, cpSync, mkdtempSync, readFileSync, readdirSync } from 'node:fs'
import { builtinModules } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import t from 'tap'
import { request } from 'undici'

t.test('dist/ runs on production dependencies alone, as a non-root user', async (t) => {
  const app = mkdtempSync(join(tmpdir(), 'wegate-dist-'))
  chmodSync(app, 0o755)
  // Build into the image layout: dist/ compiled from src/, nothing else from the repo.
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--outDir', join(app, 'dist')], { stdio: 'inherit' })
  for (const f of ['package.json', 'package-lock.json', 'gateway.yaml']) cpSync(f, join(app, f))
  const pkg = JSON.parse(readFileSync('package.json', 'utf8')) as { dependencies: Record<string, string> }
  t.same([...importedPackages(join(app, 'dist'))].sort(), Object.keys(pkg.dependencies).sort(),
    'package.json dependencies are exactly the packages dist/ imports')
  cpSync('config', join(app, 'config'), { recursive: true })
  // --offline: CI's `npm ci` has just filled the cache; nothing is fetched.
  execFileSync('npm', ['ci', '--omit=dev', '--offline', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, stdio: 'inherit' })
  t.throws(() => execFileSync(process.execPath, ['-e', "require.resolve('tap')"], { cwd: app, stdio: 'pipe' }), 'dev dependencies are absent')

  // Unprivileged like the image's `node` user (here: nobody), when the test runs as root.
  // `env -i`: a clean environment, as in the image (no test-runner hooks in NODE_OPTIONS).
  const asUser = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []
  const [cmd, ...pre] = [...asUser, 'env', '-i', `PATH=${process.env.PATH ?? ''}`, 'PORT=0', 'ADMIN_PORT=0']
  // A bare `docker run`: no JWT_SECRET, so the file's public demo secret would sign tokens. Refused.
  const bare = spawnSync(cmd, [...pre, process.execPath, 'dist/cli/main.js', 'serve', '-c', 'gateway.yaml'], { cwd: app, encoding: 'utf8', timeout: 30_000 })
  t.equal(bare.status, 1, 'without JWT_SECRET: exit 1')
  t.match(bare.stderr, /refusing to start.*public demo JWT secret[\s\S]*Set JWT_SECRET/)
  const child = spawn(cmd, [...pre, 'JWT_SECRET=dist-test-secret-0123456789abcdef-0123', process.execPath, 'dist/cli/main.js', 'serve', '-c', 'gateway.yaml'], {
    cwd: app,
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(() => { child.kill('SIGKILL') })
  const listening = await new Promise<{ publicUrl: string, adminUrl: string }>((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const l = JSON.parse(line) as { msg?: string, publicUrl: string, adminUrl: string }
        if (l.msg === 'wegate listening') resolve(l)
      } catch {}
    })
    child.once('exit', (code) => reject(new Error(`exited ${String(code)}`)))
  })
  const health = await request(`${listening.adminUrl}/healthz`)
  t.equal(health.statusCode, 200)
  await health.body.dump()
  const ready = await request(`${listening.adminUrl}/readyz`)
  t.equal(ready.statusCode, 200)
  await ready.body.dump()
  const envelope = await request(`${listening.publicUrl.replace('0.0.0.0', '127.0.0.1')}/api/x`)
  t.equal(envelope.statusCode, 401, 'the demo route asks for a token')
  await envelope.body.dump()
  child.kill('SIGTERM')
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  t.equal(code, 0, 'SIGTERM: drained, exit 0')
})

/** The packages (not Node built-ins, not relative files) that the compiled .js files under `dir` import. */
function importedPackages (dir: string): Set<string> {
  const found = new Set<string>()
  const builtins = new Set(builtinModules)
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.js')) continue
    const text = readFileSync(join(entry.parentPath, entry.name), 'utf8')
    for (const m of text.matchAll(/(?:^|[^\w.])(?:import|export)\s*(?:[^'"()]*?\sfrom\s*)?\(?\s*['"]([^'"]+)['"]/gm)) {
      const spec = m[1]
      if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue
      const parts = spec.split('/')
      found.add(spec.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0])
    }
  }
  return found
}
