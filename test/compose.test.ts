/**
 * docker-compose.yml, the local stack (Docker cannot run here): it builds the
 * Dockerfile's image and runs its command, publishes the ports the config, the
 * Dockerfile and the Kubernetes Deployment use, sets only variables gateway.yaml
 * reads, points the store and every route at a service of the stack that listens
 * there, and its demo-upstream command really serves the demo API. The README
 * names it next to `npm start`.
 */
import { spawn } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'
import { parseConfig } from '../src/config/load.js'
import { freePort } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')

interface ComposeService {
  build?: string | { context: string, dockerfile?: string }
  image?: string
  command?: string[]
  environment?: Record<string, string>
  ports?: string[]
  depends_on?: Record<string, { condition: string }>
  healthcheck?: { test?: string[], disable?: boolean }
}
interface Compose { services: Record<string, ComposeService> }

const compose = parse(readFileSync(join(root, 'docker-compose.yml'), 'utf8'), { merge: true }) as Compose
const gateway = compose.services.gateway
const configText = readFileSync(join(root, 'gateway.yaml'), 'utf8')
const env = Object.fromEntries(Object.entries(gateway.environment ?? {}).map(([k, v]) => [k, String(v)]))
const config = parseConfig(configText, env, 'gateway.yaml with the compose environment')
const dockerLines = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ').split('\n').filter((l) => !/^\s*#/.test(l))

/** "127.0.0.1:8080:8080" → { host: 8080, container: 8080, ip: '127.0.0.1' } */
function published (spec: string): { ip: string | undefined, host: number, container: number } {
  const parts = spec.split(':')
  const container = Number(parts.pop())
  const host = Number(parts.pop())
  return { ip: parts.pop(), host, container }
}

t.test('the gateway is the Dockerfile\'s image running the Dockerfile\'s command (plus --demo)', async (t) => {
  const build = typeof gateway.build === 'string' ? { context: gateway.build } : gateway.build
  t.equal(build?.context, '.')
  t.ok(existsSync(join(root, build?.dockerfile ?? 'Dockerfile')))
  const cmd = dockerLines.find((l) => /^CMD /.test(l))
  t.same(gateway.command, [...JSON.parse(cmd!.slice(4)) as string[], '--demo'])
  for (const name of ['demo-stable', 'demo-canary']) {
    t.same(compose.services[name].build, gateway.build, `${name} runs the same image`)
    t.equal(compose.services[name].image, gateway.image)
    t.equal(compose.services[name].healthcheck?.disable, true, `${name} does not inherit the gateway's HEALTHCHECK`)
  }
})

t.test('ports: the config\'s, the Dockerfile\'s EXPOSE and the Deployment\'s, on the host\'s loopback', async (t) => {
  const ports = (gateway.ports ?? []).map(published)
  t.same(ports.map((p) => p.container), [config.listen.port, config.admin.port])
  t.same(ports.map((p) => p.host), [8080, 9091], 'the ports the README names')
  t.ok(ports.every((p) => p.ip === '127.0.0.1'), 'published on loopback only')
  t.equal(config.admin.host, '0.0.0.0', 'the admin port listens beyond the container\'s loopback')
  t.equal(config.listen.host, '0.0.0.0')
  const expose = dockerLines.find((l) => /^EXPOSE /.test(l))?.slice(7).trim().split(/\s+/).map(Number)
  t.same(expose, [config.listen.port, config.admin.port], 'Dockerfile EXPOSE')
  const deployment = parseAllDocuments(readFileSync(join(root, 'deploy/kubernetes/base/deployment.yaml'), 'utf8'))[0].toJS() as {
    spec: { template: { spec: { containers: Array<{ ports: Array<{ name: string, containerPort: number }> }> } } }
  }
  t.same(deployment.spec.template.spec.containers[0].ports.map((p) => p.containerPort), [config.listen.port, config.admin.port], 'the Deployment\'s container ports')
})

t.test('every variable set is one gateway.yaml reads; store and routes point into the stack', async (t) => {
  for (const name of Object.keys(env)) t.match(configText, new RegExp(`\\$\\{${name}(:-[^}]*)?\\}`), `gateway.yaml reads ${name}`)
  t.equal(config.store.type, 'redis')
  const redisUrl = new URL(config.store.url ?? '')
  t.ok(compose.services[redisUrl.hostname], `store host ${redisUrl.hostname} is a service`)
  t.equal(redisUrl.port, '6379')
  t.match(compose.services.redis.command?.join(' ') ?? '', /--maxmemory-policy noeviction/, 'noeviction, as docs/deploying.md asks')
  t.equal(gateway.depends_on?.redis.condition, 'service_healthy')
  t.ok(config.routes.length >= 2)
  for (const route of config.routes) {
    for (const u of route.upstreams) {
      const url = new URL(u.url)
      const service = compose.services[url.hostname]
      t.ok(service, `${route.name}/${u.name}: ${url.hostname} is a service`)
      t.match(service?.command?.join(' ') ?? '', new RegExp(`startDemoUpstream\\('${u.name}', ${url.port}, '0\\.0\\.0\\.0'\\)`), `${url.hostname} serves the ${u.name} demo on ${url.port}`)
      t.ok(gateway.depends_on?.[url.hostname], `the gateway starts after ${url.hostname}`)
    }
  }
})

t.test('the demo-upstream command serves the demo API (run here against the sources)', async (t) => {
  const port = await freePort()
  const command = compose.services['demo-stable'].command ?? []
  t.equal(command[0], 'node')
  t.equal(command[1], '-e')
  t.ok(existsSync(join(root, 'src/demo/upstream.ts')), 'the image\'s dist/demo/upstream.js is built from src/demo/upstream.ts')
  const script = command[2].replace('/app/dist/demo/upstream.js', join(root, 'src/demo/upstream.ts')).replace(', 9501,', `, ${port},`)
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', script], { cwd: root, stdio: 'ignore' })
  t.teardown(() => { child.kill() })
  let answer: { service?: string, identity?: { openid: unknown } } = {}
  await waitUntil(async () => {
    const res = await fetch(`http://127.0.0.1:${port}/api/hello`, { headers: { 'x-openid': 'o1' } }).catch(() => undefined)
    if (res === undefined) return false
    answer = await res.json() as typeof answer
    return true
  }, 20_000, 50)
  t.equal(answer.service, 'demo-stable')
  t.equal(answer.identity?.openid, 'o1')
})

t.test('the README names the stack next to npm start', async (t) => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8')
  const twoCommands = readme.slice(readme.indexOf('## Two commands'), readme.indexOf('## A 60-second tour'))
  t.match(twoCommands, /npm start/)
  t.match(twoCommands, /docker compose up --build/)
  t.match(twoCommands, /docker-compose\.yml/)
})
