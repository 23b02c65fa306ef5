/**
 * `npm run bench`: wegate against the proxies a team would pick instead, in one
 * run on this machine, with the same upstream and the same load generator.
 *
 *   A  direct to the upstream (nginx `return 200`, 1 worker)
 *   B  nginx proxy_pass with upstream keep-alive (1 worker): the C reference
 *   C  bare Fastify + @fastify/http-proxy, no auth: the Node reference
 *   D  wegate from dist/, the full production path: JWT verification, the
 *      revocation check against a real Redis (through its local mirror),
 *      identity headers, sticky weighted routing over two upstreams, canary
 *      rollback tracking, metrics and the access log (to a file) on
 *   D′ D with more distinct tokens than the verification cache holds, so every
 *      request checks an HMAC signature (the worst case)
 *   Dw D with `workers: 2` (node:cluster), to decide whether that setting pays here
 *   Ds D with `listen.tls` (EC P-256 certificate), HTTPS over HTTP/1.1 (wrk, keep-alive)
 *   Dh2 the same instance over HTTP/2 (h2load: one stream at a time per connection, as
 *      many connections as wrk; one token for every request, since h2load sends fixed
 *      headers — D's pool is in the verify cache too, so the work per request is the same).
 *      h2load reports no percentiles: its p50 column is the mean, its p99 is not measured.
 *
 * Load: wrk (one thread, fixed connections) from its own process; D uses a pool
 * of distinct access tokens minted by real logins. Warm-up, then alternating
 * rounds; medians with min–max. Then: the 401 path, /auth/login against the
 * WeChat emulator, /auth/refresh, p99 added over direct at half of D's max rate,
 * and revocation propagation between two instances. Results go to
 * test/bench/results/latest.json and a table on stdout.
 *
 * Options: --rounds N (5) --duration S (8) --connections N (50) --quick
 *          --soak 10m (also run D that long and report RSS start/end)
 *          --profile (write a --cpu-prof of D under load to the results folder and print its top)
 *          --only C,D (just these scenarios of the comparison, no extras: for quick iterations)
 *          --workers N (2 where there are 2 CPUs: the Dw scenario runs D with `workers: N`; 1 skips it)
 * Env: BENCH_NODE_FLAGS="--max-semi-space-size=64" adds node flags to D's process;
 *      BENCH_SKIP_BUILD=1 uses dist/ as it is.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, openSync, existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs'
import { availableParallelism, cpus, tmpdir, totalmem, type as osType, release } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'
import { request } from 'undici'
import { stringify } from 'yaml'
import { freePort, startRedis } from '../helpers/redis.js'
import { parseDuration } from '../../src/config/units.js'

const ROOT = resolve(import.meta.dirname, '../..')
const { values: args } = parseArgs({
  options: {
    rounds: { type: 'string', default: '5' },
    duration: { type: 'string', default: '8' },
    connections: { type: 'string', default: '50' },
    quick: { type: 'boolean', default: false },
    soak: { type: 'string' },
    profile: { type: 'boolean', default: false },
    only: { type: 'string' },
    workers: { type: 'string', default: String(Math.min(2, availableParallelism())) }
  }
})
const ROUNDS = args.quick ? 3 : Number(args.rounds)
const DURATION = args.quick ? 4 : Number(args.duration)
const CONNECTIONS = Number(args.connections)
const WORKERS = Number(args.workers)
const WARMUP = args.quick ? 2 : 4
const TMP = mkdtempSync(join(tmpdir(), 'wegate-bench-'))
const APP = { appId: 'wxbench0000000001', secret: 'bench-secret' }
const CLK_TCK = 100 // Linux USER_HZ; /proc/<pid>/stat counts CPU time in these

// ── tools ──────────────────────────────────────────────────────────────────
function have (cmd: string): boolean {
  try { execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }); return true } catch { return false }
}
function ensureTools (): void {
  const missing = [['wrk', 'wrk'], ['nginx', 'nginx-light'], ['redis-server', 'redis-server'], ['h2load', 'nghttp2-client'], ['openssl', 'openssl']].filter(([c]) => !have(c)).map(([, p]) => p)
  if (missing.length === 0) return
  process.stderr.write(`bench: installing ${missing.join(' ')} from Debian's packages\n`)
  const sudo = process.getuid?.() === 0 ? [] : ['sudo']
  const run = (a: string[]) => execFileSync(sudo.length > 0 ? 'sudo' : a[0], sudo.length > 0 ? a : a.slice(1), { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  run(['apt-get', 'update', '-qq'])
  run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', ...missing])
}

// ── processes ──────────────────────────────────────────────────────────────
const children: ChildProcess[] = []
const cleanups: Array<() => Promise<void>> = []
function start (cmd: string, argv: string[], opts: { out?: string, env?: Record<string, string> } = {}): ChildProcess {
  const out = opts.out === undefined ? 'ignore' : openSync(opts.out, 'a')
  const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', out, out], env: { ...process.env, ...opts.env } })
  children.push(child)
  return child
}
async function stopAll (): Promise<void> {
  await Promise.all(children.map(async (c) => {
    if (c.exitCode !== null || c.signalCode !== null) return
    const exited = once(c, 'exit')
    c.kill('SIGTERM')
    const timer = setTimeout(() => c.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }))
  await Promise.all(cleanups.splice(0).map(async (fn) => await fn()))
  rmSync(TMP, { recursive: true, force: true }) // logs, token pools, nginx files
}
async function waitHttp (url: string, ok = (status: number) => status < 500): Promise<void> {
  for (let i = 0; i < 200; i++) {
    try {
      const res = await request(url)
      await res.body.dump()
      if (ok(res.statusCode)) return
    } catch {}
    await sleep(50)
  }
  throw new Error(`${url} did not come up`)
}

/** CPU seconds used so far by these processes (all threads). */
function cpuSeconds (pids: number[]): number {
  let ticks = 0
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(f[11]) + Number(f[12]) // utime, stime (fields 14, 15)
    } catch {}
  }
  return ticks / CLK_TCK
}
function rssMb (pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const m = /VmRSS:\s+(\d+) kB/.exec(status)
  return m === null ? 0 : Math.round(Number(m[1]) / 1024)
}
/** A process and its direct children (nginx workers, cluster workers). */
function withChildren (master: ChildProcess): number[] {
  const pid = master.pid!
  const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  return [pid, ...kids]
}

// ── nginx ──────────────────────────────────────────────────────────────────
function nginxConf (name: string, body: string): string {
  const dir = join(TMP, name)
  mkdirSync(dir, { recursive: true })
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  const conf = `${user}worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  keepalive_requests 1000000;
  keepalive_timeout 65s;
${body}
}
`
  const file = join(dir, 'nginx.conf')
  writeFileSync(file, conf)
  return file
}
async function startNginx (name: string, body: string, probe: string): Promise<ChildProcess> {
  const file = nginxConf(name, body)
  const child = start('nginx', ['-c', file, '-p', join(TMP, name)], { out: join(TMP, name, 'stdout.log') })
  await waitHttp(probe)
  return child
}

// ── wrk ────────────────────────────────────────────────────────────────────
interface WrkResult {
  requests: number
  seconds: number
  rps: number
  p50: number
  p90: number
  p99: number
  max: number
  errors: number
  non2xx: number
  /** CPU of the process(es) under test, in % of one core. */
  cpu: number
  /** Wall time of the wrk run (it may stop itself before its duration: the refresh script). */
  wall: number
}

const REPORT_LUA = `
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
`
// Paced load: each connection waits a random 0…2×pace ms (mean pace) before its next request.
// A fixed delay would keep all connections in step, and the gateway would see bursts of
// every connection at once instead of the steady rate being asked for.
const PACE_LUA = `
math.randomseed(os.time())
if pace > 0 then delay = function() return math.random(0, 2 * pace) end end
`
const TOKENS_LUA = `
local tokens = {}
for line in io.lines(os.getenv('WRK_TOKENS')) do tokens[#tokens + 1] = line end
local i = 0
local pace = tonumber(os.getenv('WRK_DELAY_MS') or '0')
request = function()
  i = i % #tokens + 1
  return wrk.format(nil, nil, { authorization = 'Bearer ' .. tokens[i] })
end
${PACE_LUA}`
const LOGIN_LUA = `
local n = 0
local out = io.open(os.getenv('WRK_OUT'), 'w')
local prefix = os.getenv('WRK_PREFIX')
request = function()
  n = n + 1
  return wrk.format('POST', '/auth/login', { ['content-type'] = 'application/json' }, '{"code":"u-' .. prefix .. n .. '-x"}')
end
response = function(status, headers, body)
  if status == 200 then
    local a = body:match('"accessToken":"([^"]+)"')
    local r = body:match('"refreshToken":"([^"]+)"')
    if a and r then out:write(a, ' ', r, '\\n') end
  end
end
`
const REFRESH_LUA = `
local tokens = {}
for line in io.lines(os.getenv('WRK_TOKENS')) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  -- past the last token: repeat it (a grace-window retry, answered 200) until the bench stops wrk
  i = math.min(i + 1, #tokens)
  return wrk.format('POST', '/auth/refresh', { ['content-type'] = 'application/json' }, '{"refreshToken":"' .. tokens[i] .. '"}')
end
`
const scripts: Record<string, string> = {}
function script (name: string, lua: string): string {
  if (scripts[name] === undefined) {
    scripts[name] = join(TMP, `${name}.lua`)
    writeFileSync(scripts[name], lua + REPORT_LUA)
  }
  return scripts[name]
}

async function wrk (url: string, opts: { seconds: number, lua: string, name: string, pids: number[], env?: Record<string, string>, connections?: number, until?: () => Promise<boolean> }): Promise<WrkResult> {
  const cpu0 = cpuSeconds(opts.pids)
  const t0 = performance.now()
  const child = spawn('wrk', ['-t1', `-c${opts.connections ?? CONNECTIONS}`, `-d${opts.seconds}s`, '--timeout', '5s', '-s', script(opts.name, opts.lua), url], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ...opts.env }
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  const exited = once(child, 'exit')
  let wall = 0
  if (opts.until !== undefined) {
    // stop wrk (SIGINT: it still prints its summary) as soon as the condition holds
    const state = { running: true }
    exited.then(() => { state.running = false }, () => {})
    while (state.running && !await opts.until()) await sleep(20)
    wall = (performance.now() - t0) / 1000
    child.kill('SIGINT')
  }
  await exited
  if (wall === 0) wall = (performance.now() - t0) / 1000
  const cpu = (cpuSeconds(opts.pids) - cpu0) / wall * 100
  const line = out.split('\n').find((l) => l.startsWith('WRKJSON '))
  if (line === undefined) throw new Error(`wrk printed no result:\n${out}`)
  const r = JSON.parse(line.slice(8)) as { requests: number, duration_us: number, p50: number, p90: number, p99: number, max: number, errors: number, non2xx: number }
  const seconds = r.duration_us / 1e6
  return { requests: r.requests, seconds, rps: r.requests / seconds, p50: r.p50 / 1000, p90: r.p90 / 1000, p99: r.p99 / 1000, max: r.max / 1000, errors: r.errors, non2xx: r.non2xx, cpu, wall }
}

/** h2load over HTTP/2 for `seconds`, in the shape of a wrk result (p50: the mean; p90/p99: not measured). */
async function h2load (url: string, opts: { seconds: number, pids: number[], headers: string[], connections?: number }): Promise<WrkResult> {
  const cpu0 = cpuSeconds(opts.pids)
  const t0 = performance.now()
  const child = spawn('h2load', ['-t1', `-c${opts.connections ?? CONNECTIONS}`, '-m1', '-D', String(opts.seconds), ...opts.headers.flatMap((h) => ['-H', h]), url], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  await once(child, 'exit')
  const wall = (performance.now() - t0) / 1000
  const cpu = (cpuSeconds(opts.pids) - cpu0) / wall * 100
  const finished = /finished in ([\d.]+)s, ([\d.]+) req\/s/.exec(out)
  const counts = /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out)
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out)
  const timing = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out)
  if (finished === null || counts === null || codes === null || timing === null) throw new Error(`h2load printed no result:\n${out}`)
  const ms = (v: string, unit: string) => Number(v) * (unit === 'us' ? 0.001 : unit === 's' ? 1000 : 1)
  const requests = Number(counts[3])
  return {
    requests,
    seconds: Number(finished[1]),
    rps: Number(finished[2]),
    p50: ms(timing[5], timing[6]),
    p90: Number.NaN,
    p99: Number.NaN,
    max: ms(timing[3], timing[4]),
    errors: Number(counts[4]) + Number(counts[5]) + Number(counts[6]),
    non2xx: Number(codes[2]) + Number(codes[3]) + Number(codes[4]),
    cpu,
    wall
  }
}

// ── statistics ─────────────────────────────────────────────────────────────
const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); const m = s.length >> 1; return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2 }
interface Summary { rps: number, rpsMin: number, rpsMax: number, p50: number, p99: number, cpu: number, errors: number, non2xx: number, rounds: number }
function summarise (rs: WrkResult[]): Summary {
  return {
    rps: median(rs.map((r) => r.rps)),
    rpsMin: Math.min(...rs.map((r) => r.rps)),
    rpsMax: Math.max(...rs.map((r) => r.rps)),
    p50: median(rs.map((r) => r.p50)),
    p99: median(rs.map((r) => r.p99)),
    cpu: median(rs.map((r) => r.cpu)),
    errors: rs.reduce((s, r) => s + r.errors, 0),
    non2xx: rs.reduce((s, r) => s + r.non2xx, 0),
    rounds: rs.length
  }
}

// ── profiles ───────────────────────────────────────────────────────────────
interface ProfileNode { id: number, callFrame: { functionName: string, url: string, lineNumber: number } }
/** The top of a .cpuprofile by self time: per function, and per package / file. */
function summariseProfile (file: string, top = 25): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }
  const nodes = new Map(p.nodes.map((n) => [n.id, n]))
  const byFn = new Map<string, number>()
  const byPart = new Map<string, number>()
  let busy = 0
  for (let i = 0; i < p.samples.length; i++) {
    const cf = nodes.get(p.samples[i])!.callFrame
    const dt = p.timeDeltas[i] ?? 0
    if (cf.functionName === '(idle)') continue
    busy += dt
    const url = cf.url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, 'wegate:')
    const part = url === '' ? (cf.functionName.startsWith('(') ? cf.functionName : 'native') : url.startsWith('wegate:') ? url : url.startsWith('node:') ? 'node core' : url.split('/').slice(0, url.startsWith('@') ? 2 : 1).join('/')
    byFn.set(`${cf.functionName || '(anonymous)'} ${url}:${cf.lineNumber + 1}`, (byFn.get(`${cf.functionName || '(anonymous)'} ${url}:${cf.lineNumber + 1}`) ?? 0) + dt)
    byPart.set(part, (byPart.get(part) ?? 0) + dt)
  }
  const list = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) => `  ${(100 * v / busy).toFixed(1).padStart(5)} %  ${k}`).join('\n')
  return `busy ${(busy / 1e6).toFixed(1)} s; self time by part:\n${list(byPart)}\nby function:\n${list(byFn)}\n`
}

// ── the run ────────────────────────────────────────────────────────────────
async function main (): Promise<void> {
  ensureTools()
  if (!existsSync(join(ROOT, 'dist/cli/main.js')) || process.env.BENCH_SKIP_BUILD !== '1') {
    execFileSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'inherit' })
  }
  const log = (s: string) => process.stderr.write(`bench: ${s}\n`)
  const [pU1, pU2, pB, pC, pD, pDadmin, pD2, pD2admin, pEmu, pW, pWadmin, pS, pSadmin] = await Promise.all(Array.from({ length: 13 }, freePort))

  // The upstream: nginx answering a small JSON body on two ports (two "versions" for D).
  const upstream = await startNginx('upstream', `
  server { listen 127.0.0.1:${pU1}; location / { default_type application/json; return 200 '{"ok":true,"v":1}'; } }
  server { listen 127.0.0.1:${pU2}; location / { default_type application/json; return 200 '{"ok":true,"v":2}'; } }`,
  `http://127.0.0.1:${pU1}/`)
  const upstreamPids = withChildren(upstream)

  const nginxProxy = await startNginx('proxy', `
  upstream app { server 127.0.0.1:${pU1}; keepalive 64; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${pB};
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }`, `http://127.0.0.1:${pB}/`)

  const bare = start(process.execPath, ['test/bench/bare-proxy.mjs', String(pC), `http://127.0.0.1:${pU1}`])
  await waitHttp(`http://127.0.0.1:${pC}/`)

  const redis = await startRedis()
  cleanups.push(redis.stop)
  start(process.execPath, ['dist/cli/main.js', 'emulator', '--port', String(pEmu), '--app', `${APP.appId}:${APP.secret}`])
  await waitHttp(`http://127.0.0.1:${pEmu}/sns/jscode2session`, () => true)

  // Ds / Dh2: a self-signed EC P-256 certificate (what cert-manager issues by default is RSA 2048:
  // slower handshakes, the same cost per request on a kept-alive connection).
  const certFile = join(TMP, 'tls.crt')
  const keyFile = join(TMP, 'tls.key')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' })
  const config = (port: number, admin: number, workers = 1, tls = false) => ({
    workers,
    listen: { host: '127.0.0.1', port, ...(tls ? { tls: { certFile, keyFile } } : {}) },
    admin: { host: '127.0.0.1', port: admin },
    store: { type: 'redis', url: redis.url, failMode: 'closed' },
    wechat: { baseUrl: `http://127.0.0.1:${pEmu}`, apps: [APP] },
    tokens: { keys: [{ kid: 'k1', secret: 'bench-secret-0123456789-0123456789-abcdef' }], accessTtl: '1h' },
    // the seed's 5/min per IP would stop a login benchmark from one address at once
    rateLimits: { login: { max: 100_000_000, window: '1m', by: 'ip' } },
    logging: { level: process.env.BENCH_LOG_LEVEL ?? 'info' },
    routes: [{
      name: 'api',
      prefix: '/api',
      auth: 'required',
      timeout: '10s',
      upstreams: [
        { name: 'stable', url: `http://127.0.0.1:${pU1}`, weight: 90 },
        { name: 'canary', url: `http://127.0.0.1:${pU2}`, weight: 10 }
      ],
      canary: { sticky: 'openid', header: 'X-Canary', openids: [], rollback: { upstream: 'canary', errorRate: 0.01, window: '1m', minRequests: 100 } }
    }]
  })
  writeFileSync(join(TMP, 'gateway.yaml'), stringify(config(pD, pDadmin)))
  writeFileSync(join(TMP, 'gateway2.yaml'), stringify(config(pD2, pD2admin)))
  writeFileSync(join(TMP, 'gateway-workers.yaml'), stringify(config(pW, pWadmin, WORKERS)))
  writeFileSync(join(TMP, 'gateway-tls.yaml'), stringify(config(pS, pSadmin, 1, true)))
  const profileDir = join(ROOT, 'test/bench/results/profile')
  if (args.profile) rmSync(profileDir, { recursive: true, force: true })
  const nodeFlags = args.profile ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)
  // The access log goes to a file, as it would to a container's log pipe.
  const gw = start(process.execPath, [...nodeFlags, 'dist/cli/main.js', 'serve', '-c', join(TMP, 'gateway.yaml')], { out: join(TMP, 'access.log') })
  await waitHttp(`http://127.0.0.1:${pDadmin}/readyz`, (s) => s === 200)
  const gwPids = [gw.pid!]
  const rss0 = rssMb(gw.pid!)
  // A second instance on the same Redis: logins are minted there (so D's profile and memory
  // figures are the proxy path's alone) and it is the far side of the propagation measurement.
  start(process.execPath, ['dist/cli/main.js', 'serve', '-c', join(TMP, 'gateway2.yaml')])
  await waitHttp(`http://127.0.0.1:${pD2admin}/readyz`, (s) => s === 200)
  // D with `workers`: the same path in several processes sharing the port (node:cluster).
  const gwWorkers = WORKERS > 1 && !args.profile ? start(process.execPath, ['dist/cli/main.js', 'serve', '-c', join(TMP, 'gateway-workers.yaml')], { out: join(TMP, 'access-workers.log') }) : undefined
  if (gwWorkers !== undefined) await waitHttp(`http://127.0.0.1:${pWadmin}/readyz`, (s) => s === 200)
  // D with TLS: HTTPS (HTTP/1.1) and HTTP/2 on one instance, measured one at a time.
  const gwTls = args.profile ? undefined : start(process.execPath, ['dist/cli/main.js', 'serve', '-c', join(TMP, 'gateway-tls.yaml')], { out: join(TMP, 'access-tls.log') })
  if (gwTls !== undefined) await waitHttp(`http://127.0.0.1:${pSadmin}/readyz`, (s) => s === 200)

  const A = `http://127.0.0.1:${pU1}/api/bench`
  const B = `http://127.0.0.1:${pB}/api/bench`
  const C = `http://127.0.0.1:${pC}/api/bench`
  const D = `http://127.0.0.1:${pD}/api/bench`

  /** Load D for `duration` with every minted token (verify cache churning), sampling its RSS every 5 s. */
  const runSoak = async (duration: string) => {
    const ms = parseDuration(duration)
    log(`soak: ${duration} of load on D, sampling RSS`)
    const samples: number[] = [rssMb(gw.pid!)]
    const sampler = setInterval(() => samples.push(rssMb(gw.pid!)), 5000)
    const r = await wrk(D, { seconds: Math.round(ms / 1000), lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env: { WRK_TOKENS: join(TMP, 'tokens-soak.txt') } })
    clearInterval(sampler)
    samples.push(rssMb(gw.pid!))
    // one median per minute (12 samples): a plateau means bounded, a slope means a leak
    const perMinute = 12
    const minuteMediansMb: number[] = []
    for (let i = 1; i + perMinute <= samples.length; i += perMinute) minuteMediansMb.push(median(samples.slice(i, i + perMinute)))
    return {
      minutes: ms / 60_000,
      rssStartMb: samples[0],
      rssEndMb: samples[samples.length - 1],
      rssMaxMb: Math.max(...samples),
      firstMinuteMedianMb: minuteMediansMb[0],
      lastMinuteMedianMb: minuteMediansMb[minuteMediansMb.length - 1],
      minuteMediansMb,
      rps: r.rps,
      requests: r.requests,
      errors: r.errors + r.non2xx
    }
  }

  // 1. /auth/login against the emulator; its answers are the token pool for everything after.
  log('login throughput (and minting the token pool)')
  const pairs = join(TMP, 'pairs.txt')
  const gw2Pids = [children[children.length - 1].pid!]
  await wrk(`http://127.0.0.1:${pD2}/auth/login`, { seconds: 1, lua: LOGIN_LUA, name: 'login', pids: gw2Pids, env: { WRK_OUT: join(TMP, 'warm.txt'), WRK_PREFIX: 'w' } })
  const login = await wrk(`http://127.0.0.1:${pD2}/auth/login`, { seconds: args.quick || args.profile ? 6 : 10, lua: LOGIN_LUA, name: 'login', pids: gw2Pids, env: { WRK_OUT: pairs, WRK_PREFIX: 'b' } })
  const minted = readFileSync(pairs, 'utf8').trim().split('\n').map((l) => l.split(' '))
  const access = minted.map((p) => p[0])
  const refresh = minted.map((p) => p[1])
  const HOT = Math.min(5000, access.length)
  writeFileSync(join(TMP, 'tokens-hot.txt'), access.slice(0, HOT).join('\n') + '\n')
  writeFileSync(join(TMP, 'tokens-cold.txt'), access.join('\n') + '\n')
  // the propagation step logs out the last 30 tokens; the soak runs after it
  writeFileSync(join(TMP, 'tokens-soak.txt'), access.slice(0, -30).join('\n') + '\n')
  // the 401 path: the same tokens with their signature's last characters changed
  writeFileSync(join(TMP, 'tokens-bad.txt'), access.slice(0, HOT).map((tok) => tok.slice(0, -4) + (tok.endsWith('AAAA') ? 'BBBB' : 'AAAA')).join('\n') + '\n')
  log(`${access.length} logins: ${login.rps.toFixed(0)}/s; ${HOT} tokens in the hot pool`)

  if (args.profile) {
    // Only D's proxy path under load, then the profile's top entries by self time.
    log('profiling D under load')
    const env = { WRK_TOKENS: join(TMP, process.env.BENCH_PROFILE_TOKENS === 'bad' ? 'tokens-bad.txt' : 'tokens-hot.txt') }
    await wrk(D, { seconds: WARMUP, lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env })
    const r = await wrk(D, { seconds: DURATION * 3, lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env })
    await stopAll()
    const prof = readdirSync(profileDir).filter((f) => f.endsWith('.cpuprofile')).sort().pop()
    if (prof === undefined) throw new Error('no profile written')
    renameSync(join(profileDir, prof), join(profileDir, 'wegate.cpuprofile'))
    process.stdout.write(`D: ${r.rps.toFixed(0)} req/s under the profiler\n${summariseProfile(join(profileDir, 'wegate.cpuprofile'))}`)
    return
  }

  // 2. The proxy comparison: warm-up, then alternating rounds.
  // Every scenario runs the same wrk script (a token per request from the pool, ignored by
  // A, B and C), so the load generator does the same work whatever it is measuring.
  const hot = { WRK_TOKENS: join(TMP, 'tokens-hot.txt') }
  const scenarios: Array<{ key: string, label: string, url: string, lua: string, name: string, pids: number[], env?: Record<string, string>, h2?: string[] }> = [
    { key: 'A', label: 'A direct to upstream', url: A, lua: TOKENS_LUA, name: 'tokens', pids: upstreamPids, env: hot },
    { key: 'B', label: 'B nginx proxy_pass', url: B, lua: TOKENS_LUA, name: 'tokens', pids: withChildren(nginxProxy), env: hot },
    { key: 'C', label: 'C Fastify + @fastify/http-proxy', url: C, lua: TOKENS_LUA, name: 'tokens', pids: [bare.pid!], env: hot },
    { key: 'D', label: 'D wegate (full path)', url: D, lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env: { WRK_TOKENS: join(TMP, 'tokens-hot.txt') } }
  ]
  if (gwWorkers !== undefined) {
    scenarios.push({ key: 'Dw', label: `D wegate, workers: ${WORKERS}`, url: `http://127.0.0.1:${pW}/api/bench`, lua: TOKENS_LUA, name: 'tokens', pids: withChildren(gwWorkers), env: { WRK_TOKENS: join(TMP, 'tokens-hot.txt') } })
  }
  if (gwTls !== undefined) {
    const S = `https://127.0.0.1:${pS}/api/bench`
    scenarios.push({ key: 'Ds', label: 'Ds wegate, HTTPS (HTTP/1.1, wrk)', url: S, lua: TOKENS_LUA, name: 'tokens', pids: [gwTls.pid!], env: { WRK_TOKENS: join(TMP, 'tokens-hot.txt') } })
    scenarios.push({ key: 'Dh2', label: 'Dh2 wegate, HTTP/2 (h2load)', url: S, lua: '', name: 'h2', pids: [gwTls.pid!], h2: [`authorization: Bearer ${access[0]}`] })
  }
  if (access.length > 10_000) {
    scenarios.push({ key: 'Dcold', label: `D′ wegate, ${access.length} tokens (> verify cache)`, url: D, lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env: { WRK_TOKENS: join(TMP, 'tokens-cold.txt') } })
  }
  if (args.only !== undefined) {
    const keep = new Set(args.only.split(','))
    for (let i = scenarios.length - 1; i >= 0; i--) if (!keep.has(scenarios[i].key)) scenarios.splice(i, 1)
  }
  /** One run of a scenario: wrk, or h2load for the HTTP/2 one. */
  const load = async (s: typeof scenarios[number], seconds: number): Promise<WrkResult> => s.h2 !== undefined
    ? await h2load(s.url, { seconds, pids: s.pids, headers: s.h2 })
    : await wrk(s.url, { seconds, lua: s.lua, name: s.name, pids: s.pids, env: s.env })
  log('warm-up')
  for (const s of scenarios) await load(s, WARMUP)
  const results: Record<string, WrkResult[]> = Object.fromEntries(scenarios.map((s) => [s.key, []]))
  for (let round = 1; round <= ROUNDS; round++) {
    // rotate the order each round, so no scenario always runs on a warmer (or hotter) machine
    const order = scenarios.map((_, i) => scenarios[(i + round) % scenarios.length])
    for (const s of order) {
      const r = await load(s, DURATION)
      results[s.key].push(r)
      log(`round ${round}/${ROUNDS} ${s.label}: ${r.rps.toFixed(0)} req/s ${latency(r)} cpu ${r.cpu.toFixed(0)} %`)
    }
  }
  const sum = Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, summarise(rs)]))
  if (args.only !== undefined) {
    // A quick comparison while optimising: just these scenarios (and --soak), no extras, nothing written.
    for (const s of scenarios) {
      const x = sum[s.key]
      process.stdout.write(`${s.label.padEnd(44)} ${x.rps.toFixed(0).padStart(7)} req/s (${x.rpsMin.toFixed(0)}–${x.rpsMax.toFixed(0)})  ${latency(x)}  cpu ${x.cpu.toFixed(0)} %${x.errors + x.non2xx > 0 ? `  ${x.errors} errors, ${x.non2xx} non-2xx` : ''}\n`)
    }
    if (sum.C !== undefined && sum.D !== undefined) process.stdout.write(`D/C = ${(sum.D.rps / sum.C.rps).toFixed(3)}\n`)
    const tlsLine = tlsRatios(sum)
    if (tlsLine !== '') process.stdout.write(tlsLine + '\n')
    if (args.soak !== undefined) process.stdout.write(`soak: ${JSON.stringify(await runSoak(args.soak))}\n`)
    await stopAll()
    return
  }

  // 3. The 401 path: forged signatures.
  log('401 path (bad signatures)')
  const rejected = await wrk(D, { seconds: DURATION, lua: TOKENS_LUA, name: 'tokens', pids: gwPids, env: { WRK_TOKENS: join(TMP, 'tokens-bad.txt') } })

  // 4. p99 added over direct, at half of D's max rate (wrk paced with delay()).
  const halfRate = Math.round(sum.D.rps / 2)
  const delayMs = String(Math.max(1, Math.round(CONNECTIONS * 1000 / halfRate)))
  log(`paced load at ~${halfRate} req/s (delay ${delayMs} ms per connection)`)
  // B and C at the same rate put the figure in context: what any proxy on this machine adds.
  const pacedRuns: Record<'A' | 'B' | 'C' | 'D', WrkResult[]> = { A: [], B: [], C: [], D: [] }
  for (let i = 0; i < Math.max(2, Math.ceil(ROUNDS / 2)); i++) {
    for (const s of scenarios) {
      if (s.key !== 'A' && s.key !== 'B' && s.key !== 'C' && s.key !== 'D') continue
      pacedRuns[s.key].push(await wrk(s.url, { seconds: DURATION, lua: s.lua, name: s.name, pids: s.pids, env: { ...s.env, WRK_DELAY_MS: delayMs } }))
    }
  }
  const paced = { A: summarise(pacedRuns.A), B: summarise(pacedRuns.B), C: summarise(pacedRuns.C), D: summarise(pacedRuns.D) }

  // 5. /auth/refresh: each minted refresh token spent once.
  log('refresh throughput')
  writeFileSync(join(TMP, 'refresh.txt'), refresh.join('\n') + '\n')
  // each minted refresh token once: the script stops wrk after the last answer
  // Until the gateway has answered one refresh per token (its own counter), then wrk is stopped:
  // the rate is tokens over that wall time.
  const refreshCount = async (): Promise<number> => {
    const text = await (await request(`http://127.0.0.1:${pDadmin}/metrics`)).body.text()
    let n = 0
    for (const line of text.split('\n')) if (line.startsWith('wegate_refreshes_total{')) n += Number(line.slice(line.lastIndexOf(' ') + 1))
    return n
  }
  const refreshBase = await refreshCount()
  const refreshRun = await wrk(`http://127.0.0.1:${pD}/auth/refresh`, { seconds: 60, lua: REFRESH_LUA, name: 'refresh', pids: gwPids, env: { WRK_TOKENS: join(TMP, 'refresh.txt') }, until: async () => await refreshCount() - refreshBase >= refresh.length })
  const refreshed = { ...refreshRun, rps: refresh.length / refreshRun.wall }

  // 6. Revocation propagation: logout on one instance, poll another until it refuses the token.
  log('revocation propagation between two instances')
  const propagation: number[] = []
  for (let i = 0; i < 30; i++) {
    const token = access[access.length - 1 - i]
    const probe = async () => { const r = await request(`http://127.0.0.1:${pD2}/api/p`, { headers: { authorization: `Bearer ${token}` } }); await r.body.dump(); return r.statusCode }
    if (await probe() !== 200) throw new Error('a pool token was not accepted by the second instance')
    const t0 = performance.now()
    const out = await request(`http://127.0.0.1:${pD}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${token}` } })
    await out.body.dump()
    while (await probe() !== 401) await new Promise((resolve) => setImmediate(resolve))
    propagation.push(performance.now() - t0)
  }

  // 7. Memory under a long run (optional).
  const soak = args.soak === undefined ? undefined : await runSoak(args.soak)
  const rssEnd = rssMb(gw.pid!)
  const accessLogMb = Math.round(statSync(join(TMP, 'access.log')).size / 1e6)

  await stopAll()

  const machine = { cpus: cpus().length, model: cpus()[0]?.model ?? '', memGb: Math.round(totalmem() / 2 ** 30), os: `${osType()} ${release()}`, node: process.version, nginx: spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr.trim().replace('nginx version: ', ''), wrk: spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 2).join(' ') }
  const ratios = {
    'D/C': sum.D.rps / sum.C.rps,
    'D/B': sum.D.rps / sum.B.rps,
    'C/B': sum.C.rps / sum.B.rps,
    ...(sum.Dcold !== undefined ? { 'D′/C': sum.Dcold.rps / sum.C.rps } : {}),
    ...(sum.Dw !== undefined ? { 'Dw/D': sum.Dw.rps / sum.D.rps } : {}),
    ...(sum.Ds !== undefined ? { 'Ds/D': sum.Ds.rps / sum.D.rps } : {}),
    ...(sum.Dh2 !== undefined ? { 'Dh2/D': sum.Dh2.rps / sum.D.rps } : {}),
    p99AddedMs: paced.D.p99 - paced.A.p99
  }
  const report = {
    date: new Date().toISOString(),
    machine,
    settings: { rounds: ROUNDS, seconds: DURATION, connections: CONNECTIONS, tokens: { hot: HOT, cold: access.length } },
    scenarios: sum,
    ratios,
    paced: { rate: halfRate, ...paced, p99AddedMs: { B: paced.B.p99 - paced.A.p99, C: paced.C.p99 - paced.A.p99, D: paced.D.p99 - paced.A.p99 } },
    rejected401: { rps: rejected.rps, p99: rejected.p99, cpu: rejected.cpu, answered2xx: rejected.requests - rejected.non2xx },
    login: { rps: login.rps, p99: login.p99, minted: access.length, errors: login.errors + login.non2xx },
    refresh: { rps: refreshed.rps, p99: refreshed.p99, errors: refreshed.errors + refreshed.non2xx },
    propagationMs: { median: median(propagation), max: Math.max(...propagation), samples: propagation.length },
    rssMb: { start: rss0, end: rssEnd },
    soak,
    accessLogMb
  }
  const resultsDir = join(ROOT, 'test/bench/results')
  mkdirSync(resultsDir, { recursive: true })
  writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify(report, null, 2) + '\n')

  const f0 = (n: number) => n.toFixed(0).padStart(7)
  const f2 = (n: number) => Number.isFinite(n) ? n.toFixed(2).padStart(6) : '     –'
  const row = (label: string, s: Summary) => `${label.padEnd(44)} ${f0(s.rps)} (${s.rpsMin.toFixed(0)}–${s.rpsMax.toFixed(0)})  ${f2(s.p50)}  ${f2(s.p99)}  ${s.cpu.toFixed(0).padStart(4)} %${s.errors + s.non2xx > 0 ? `  ${s.errors} errors, ${s.non2xx} non-2xx` : ''}`
  const lines = [
    '',
    `wegate bench — ${machine.cpus} × ${machine.model}, Node ${machine.node}, ${machine.nginx}, ${machine.wrk} (1 thread, ${CONNECTIONS} connections), ${ROUNDS} rounds × ${DURATION} s`,
    '',
    `${'scenario'.padEnd(44)}   req/s (min–max)            p50 ms  p99 ms   CPU`,
    ...scenarios.map((s) => row(s.label, sum[s.key])),
    '',
    `D/C = ${ratios['D/C'].toFixed(3)}   D/B = ${ratios['D/B'].toFixed(3)}   C/B = ${ratios['C/B'].toFixed(3)}${sum.Dcold !== undefined ? `   D′/C = ${(sum.Dcold.rps / sum.C.rps).toFixed(3)}` : ''}${sum.Dw !== undefined ? `   workers: ${WORKERS} gives ×${(sum.Dw.rps / sum.D.rps).toFixed(2)}` : ''}`,
    ...(tlsRatios(sum) === '' ? [] : [tlsRatios(sum)]),
    `p99 added over direct at ~${halfRate} req/s (half of D's max), random pacing: D ${ratios.p99AddedMs.toFixed(2)} ms, C ${(paced.C.p99 - paced.A.p99).toFixed(2)} ms, B ${(paced.B.p99 - paced.A.p99).toFixed(2)} ms (achieved req/s: A ${paced.A.rps.toFixed(0)}, B ${paced.B.rps.toFixed(0)}, C ${paced.C.rps.toFixed(0)}, D ${paced.D.rps.toFixed(0)}; p99: A ${paced.A.p99.toFixed(2)}, B ${paced.B.p99.toFixed(2)}, C ${paced.C.p99.toFixed(2)}, D ${paced.D.p99.toFixed(2)} ms; p50: A ${paced.A.p50.toFixed(2)}, D ${paced.D.p50.toFixed(2)} ms)`,
    '',
    `401 path (forged signatures)   ${f0(rejected.rps)} req/s  p99 ${rejected.p99.toFixed(2)} ms`,
    `/auth/login (emulator)         ${f0(login.rps)} req/s  p99 ${login.p99.toFixed(2)} ms  (${access.length} tokens minted${login.non2xx + login.errors > 0 ? `, ${login.non2xx + login.errors} failed` : ''})`,
    `/auth/refresh                  ${f0(refreshed.rps)} req/s  p99 ${refreshed.p99.toFixed(2)} ms${refreshed.non2xx + refreshed.errors > 0 ? `  (${refreshed.non2xx + refreshed.errors} failed)` : ''}`,
    `revocation propagation         median ${median(propagation).toFixed(1)} ms, max ${Math.max(...propagation).toFixed(1)} ms over ${propagation.length} logouts`,
    `wegate RSS                     ${rss0} MB at start, ${rssEnd} MB at the end${soak !== undefined ? `; soak ${soak.minutes} min at ${soak.rps.toFixed(0)} req/s: ${soak.rssStartMb} → ${soak.rssEndMb} MB (max ${soak.rssMaxMb}; first-minute median ${soak.firstMinuteMedianMb}, last-minute ${soak.lastMinuteMedianMb})` : ''}`,
    '',
    'results: test/bench/results/latest.json',
    ''
  ]
  process.stdout.write(lines.join('\n'))
}

/** `p99 1.23 ms`, or the mean where the tool measures no percentiles (h2load). */
function latency (r: { p50: number, p99: number }): string {
  return Number.isFinite(r.p99) ? `p99 ${r.p99.toFixed(2)} ms` : `mean ${r.p50.toFixed(2)} ms`
}

/** The cost of TLS and HTTP/2: their throughput and CPU per request against plain HTTP (D). */
function tlsRatios (sum: Record<string, Summary>): string {
  const D = sum.D
  if (D === undefined) return ''
  const perRequest = (s: Summary) => (s.cpu / s.rps) / (D.cpu / D.rps)
  const parts: string[] = []
  if (sum.Ds !== undefined) parts.push(`HTTPS/HTTP = ${(sum.Ds.rps / D.rps).toFixed(3)} (CPU per request ×${perRequest(sum.Ds).toFixed(2)})`)
  if (sum.Dh2 !== undefined) parts.push(`h2/HTTP = ${(sum.Dh2.rps / D.rps).toFixed(3)} (CPU per request ×${perRequest(sum.Dh2).toFixed(2)})`)
  return parts.join('   ')
}

// Ctrl-C: leave no nginx, Redis or gateway behind.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => { stopAll().finally(() => process.exit(130)) })
}

main().catch(async (err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  await stopAll()
  process.exitCode = 1
})
