import { readFile } from 'node:fs/promises'
import t from 'tap'
import { stringify } from 'yaml'
import { ConfigError, formatProblem } from '../src/config/errors.js'
import { loadConfigFile, parseConfig } from '../src/config/load.js'
import { SEVEN_MISTAKES, SEVEN_PROBLEMS } from './helpers/bad-config.js'
import { baseConfig, merge } from './helpers/gateway.js'

const problemsOf = (text: string, env: Record<string, string> = {}): string[] => {
  try {
    parseConfig(text, env)
  } catch (e) {
    if (e instanceof ConfigError) return e.problems.map((p) => `${p.path}: ${p.message}`)
    throw e
  }
  return []
}
const yamlOf = (patch: Record<string, unknown>) => stringify(merge(baseConfig(), patch))

t.test('the repository gateway.yaml is valid with no environment at all', async (t) => {
  const { config, hash } = await loadConfigFile('gateway.yaml', {})
  t.equal(config.store.type, 'memory')
  t.equal(config.listen.port, 8080)
  t.equal(config.tokens.accessTtl, 15 * 60_000, 'durations decoded to ms')
  t.equal(config.tokens.refreshTtl, 7 * 86_400_000)
  t.equal(config.limits.headerSize, 16 * 1024, 'sizes decoded to bytes')
  t.ok(config.routes.length >= 1)
  t.match(hash, /^[0-9a-f]{16}$/)
})

t.test('defaults live in the schema', async (t) => {
  const c = parseConfig(yamlOf({ routes: [{ name: 'r', prefix: '/r', upstreams: [{ name: 'a', url: 'http://127.0.0.1:1', weight: 1 }] }] }), {})
  t.equal(c.tokens.algorithm, 'HS256')
  t.equal(c.tokens.clockSkew, 30_000)
  t.equal(c.rateLimits.login.max, 5)
  t.equal(c.rateLimits.login.window, 60_000)
  t.equal(c.routes[0].auth, 'required')
  t.equal(c.routes[0].timeout, 30_000)
  t.equal(c.routes[0].bodyLimit, 1024 * 1024)
  t.equal(c.store.failMode, 'closed')
})

t.test('${VAR} and ${VAR:-default} interpolation', async (t) => {
  const text = yamlOf({
    listen: { host: '127.0.0.1', port: '${PORT:-8081}' },
    wechat: { apps: [{ appId: '${APP}', secret: 'a$${literal}b' }] }
  })
  const c = parseConfig(text, { APP: 'wxabc' })
  t.equal(c.listen.port, 8081, 'default used and converted to a number')
  t.equal(c.wechat.apps[0].appId, 'wxabc')
  t.equal(c.wechat.apps[0].secret, 'a${literal}b', '$${ escapes a literal ${')
  t.equal(parseConfig(text, { APP: 'wxabc', PORT: '9999' }).listen.port, 9999)
})

t.test('an unset variable is reported with its path', async (t) => {
  const problems = problemsOf(yamlOf({ wechat: { apps: [{ appId: 'wx1', secret: '${WX_SECRET}' }] } }))
  t.same(problems, ['wechat.apps[0].secret: environment variable WX_SECRET is not set (use ${WX_SECRET:-default} for a default)'])
})

t.test('every problem is listed with its path, not just the first', async (t) => {
  const problems = problemsOf(yamlOf({
    listen: { port: 70000, colour: 'blue' },
    tokens: { accessTtl: '15 minutes', algorithm: 'HS512' },
    routes: [
      { name: 'ok', prefix: '/ok', upstreams: [{ name: 'a', url: 'http://127.0.0.1:1', weight: 1 }] },
      { name: 'bad', prefix: 'api', auth: 'maybe', upstreams: [{ name: 'a', url: 'ftp://x', weight: -1 }] }
    ]
  }))
  t.same(problems.sort(), [
    'listen.colour: unknown key',
    'listen.port: must be <= 65535',
    'routes[1].auth: must be one of required | optional | public',
    'routes[1].prefix: must start with /',
    'routes[1].upstreams[0].url: must be an http:// or https:// URL',
    'routes[1].upstreams[0].weight: must be >= 0',
    'tokens.accessTtl: must be a duration like 800ms, 30s, 15m, 2h, 7d',
    'tokens.algorithm: must be one of HS256 | RS256 | ES256 | EdDSA'
  ])
})

t.test('rules the schema cannot express', async (t) => {
  const up = (name: string, weight = 1) => ({ name, url: 'http://127.0.0.1:1', weight })
  const problems = problemsOf(yamlOf({
    trustProxy: ['10.0.0.0/8', '300.1.1.1', '::1/129'],
    wechat: { apps: [{ appId: 'wx1', secret: 's' }, { appId: 'wx1', secret: 't' }] },
    tokens: { keys: [{ kid: 'k1' }] },
    routes: [
      { name: 'a', prefix: '/a', upstreams: [up('s', 0)], canary: { rollback: { upstream: 'nope' } } },
      { name: 'a', prefix: '/a/', upstreams: [up('s'), up('s')] },
      { name: 'c', prefix: '/auth/x', upstreams: [up('s')] },
      { name: 'd', prefix: '/d/../e', upstreams: [up('s')] }
    ]
  }))
  t.same(problems.sort(), [
    "routes[0].canary.rollback.upstream: names no upstream of route 'a'",
    'routes[0].upstreams: at least one upstream needs a weight > 0',
    "routes[1].name: duplicate route name 'a' (also at index 0)",
    "routes[1].prefix: duplicate prefix '/a' (also at index 0)",
    "routes[1].upstreams[1].name: duplicate upstream name 's' (also at index 0)",
    "routes[2].prefix: '/auth/x' is reserved by the gateway",
    'routes[3].prefix: must be a plain normalised path (no //, . or .. segments, %, ;, ?, #, \\)',
    'tokens.keys[0].secret: is required with algorithm HS256',
    "trustProxy[1]: '300.1.1.1' is not an IP address or CIDR",
    "trustProxy[2]: '::1/129' is not an IP address or CIDR",
    "wechat.apps[1].appId: duplicate appId 'wx1' (also at index 0)"
  ])
})

t.test('store topologies: a single url (the default), a cluster or a sentinel', async (t) => {
  const store = (over: Record<string, unknown>) => parseConfig(yamlOf({ store: { type: 'redis', ...over } }), { REDIS_PASSWORD: 's3cret' }).store
  t.equal(store({}).url, undefined, 'no topology: the store uses its default url')
  t.equal(store({ url: 'rediss://:pw@redis.example.com:6380/0' }).url, 'rediss://:pw@redis.example.com:6380/0')
  t.same(store({ cluster: { nodes: ['10.0.0.1:6379', 'redis-1.redis:6379', '[::1]:7000'], password: '${REDIS_PASSWORD}' } }).cluster,
    { nodes: ['10.0.0.1:6379', 'redis-1.redis:6379', '[::1]:7000'], password: 's3cret', tls: false }, 'password from the environment')
  t.same(store({ sentinel: { name: 'mymaster', nodes: ['sentinel-0:26379', 'sentinel-1:26379'], sentinelPassword: 'sp', tls: true } }).sentinel,
    { name: 'mymaster', nodes: ['sentinel-0:26379', 'sentinel-1:26379'], sentinelPassword: 'sp', tls: true })
})

t.test('store: more than one topology, or a malformed one, is refused with its path', async (t) => {
  const problems = (store: Record<string, unknown>) => problemsOf(yamlOf({ store }))
  t.same(problems({ type: 'redis', url: 'redis://r:6379', cluster: { nodes: ['r:6379'] } }),
    ['store: set only one of url, cluster, sentinel (found url and cluster)'])
  t.same(problems({ type: 'redis', cluster: { nodes: ['a:6379'] }, sentinel: { name: 'm', nodes: ['s:26379'] } }),
    ['store: set only one of url, cluster, sentinel (found cluster and sentinel)'])
  t.same(problems({ type: 'memory', sentinel: { name: 'm', nodes: ['s:26379'] } }), ['store.sentinel: needs store.type redis'])
  t.same(problems({ type: 'redis', cluster: { nodes: [] } }).sort(), ['store.cluster.nodes: must have at least 1 item(s)'])
  t.same(problems({ type: 'redis', cluster: { nodes: ['redis://a:6379', 'a', 'a:99999'], user: 'x' } }).sort(), [
    'store.cluster.nodes[0]: must be host:port',
    'store.cluster.nodes[1]: must be host:port',
    'store.cluster.user: unknown key'
  ])
  t.same(problems({ type: 'redis', sentinel: { nodes: ['s:0'] } }), ['store.sentinel.name: is required'],
    'a missing key is reported once; port ranges are checked once the schema holds')
  t.same(problems({ type: 'redis', sentinel: { name: 'm', nodes: ['s:0', 's:26379'] } }), ['store.sentinel.nodes[0]: port must be 1…65535'])
})

t.test('YAML syntax errors and duplicate keys carry a line number', async (t) => {
  const problems = problemsOf('listen:\n  port: 1\n  port: 2\n')
  t.equal(problems.length, 1)
  t.match(problems[0], /YAML: Map keys must be unique/)
  try {
    parseConfig('listen: { port: 1\nadmin: x\n', {})
    t.fail('should throw')
  } catch (e) {
    t.type(e, ConfigError)
    t.ok((e as ConfigError).problems[0].line !== undefined, 'line reported')
  }
  t.same(problemsOf('- just\n- a list\n'), [': must be a YAML mapping'])
})

t.test('an unreadable file is a ConfigError, not a crash', async (t) => {
  await t.rejects(loadConfigFile('/nonexistent/gateway.yaml'), ConfigError)
})

t.test('the config hash covers the key files it names: replaced keys are a change, the file hash is not', async (t) => {
  const { mkdtemp, rm, writeFile } = await import('node:fs/promises')
  const { tmpdir } = await import('node:os')
  const { join } = await import('node:path')
  const { generateKeyPairSync } = await import('node:crypto')
  const dir = await mkdtemp(join(tmpdir(), 'wegate-hash-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const pem = () => generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const key = join(dir, 'signing.pem')
  const file = join(dir, 'gateway.yaml')
  await writeFile(key, pem())
  await writeFile(file, yamlOf({ tokens: { algorithm: 'ES256', keys: [{ kid: 'k1', privateKeyFile: key }] } }))
  const first = await loadConfigFile(file, {})
  t.equal((await loadConfigFile(file, {})).hash, first.hash, 'stable while nothing changes')
  await writeFile(key, pem())
  const second = await loadConfigFile(file, {})
  t.not(second.hash, first.hash, 'a key file replaced in place changes the hash')
  t.equal(second.fileHash, first.fileHash, 'the hash of gateway.yaml alone does not change')
  await rm(key)
  t.not((await loadConfigFile(file, {})).hash, second.hash, 'a missing key file too (the token keys then report it)')

  const hs = join(dir, 'hs.yaml')
  await writeFile(hs, yamlOf({}))
  const loaded = await loadConfigFile(hs, {})
  t.equal(loaded.hash, loaded.fileHash, 'no key files (HS256): the hash is the file\'s')
})

t.test('config/gateway.schema.json is the exported schema, up to date', async (t) => {
  const { editorSchema } = await import('../src/config/schema.js')
  const onDisk = JSON.parse(await readFile('config/gateway.schema.json', 'utf8')) as { required?: string[] }
  t.same(onDisk, editorSchema(), 'run `npm run schema` after changing src/config/schema.ts')
  t.same(onDisk.required, ['wechat', 'tokens'], 'keys with defaults are optional for editors')
})

t.test('docs/configuration.md documents every field, from the schema', async (t) => {
  const { configReference } = await import('../src/config/schema.js')
  const doc = await readFile('docs/configuration.md', 'utf8')
  t.equal(doc, configReference(), 'run `npm run schema` after changing src/config/schema.ts')
  for (const field of ['routes[].canary.rollback.errorRate', 'tokens.keys[].kid', 'store.failMode', 'limits.headerSize']) {
    t.match(doc, `| \`${field}\` |`, `${field} documented`)
  }
})

t.test('regression: schema, ${VAR} and rule problems are reported together, each with its line, in file order', async (t) => {
  try {
    parseConfig(SEVEN_MISTAKES, {})
    t.fail('should throw')
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    t.same(e.problems.map(formatProblem), SEVEN_PROBLEMS)
  }
})

t.test('an unknown key names the closest known key, when one is close', async (t) => {
  const problems = problemsOf(yamlOf({
    listen: { prot: 8080 },
    tokens: { acessTtl: '15m' },
    store: { failmode: 'open', colour: 'blue' }
  }))
  t.same(problems.sort(), [
    'listen.prot: unknown key — did you mean port?',
    'store.colour: unknown key',
    'store.failmode: unknown key — did you mean failMode?',
    'tokens.acessTtl: unknown key — did you mean accessTtl?'
  ])
})

t.test('a rule reading a malformed field is skipped; the other rules still run', async (t) => {
  const up = (name: string, weight: unknown) => ({ name, url: 'http://127.0.0.1:1', weight })
  const problems = problemsOf(yamlOf({
    routes: [
      { name: 'a', prefix: '/a', upstreams: [up('s', 'heavy'), up('s', 0)] },
      { name: 'a', prefix: 5, upstreams: [up('s', 1)] }
    ]
  }))
  t.same(problems.sort(), [
    'routes[0].upstreams[0].weight: must be an integer',
    "routes[0].upstreams[1].name: duplicate upstream name 's' (also at index 0)",
    "routes[1].name: duplicate route name 'a' (also at index 0)",
    'routes[1].prefix: must start with /'
  ], 'no weight rule on a route with a malformed weight; no prefix rules over a malformed prefix')
})

t.test('token keys: a duplicate kid and an HS256 key without a secret are the loader\'s to refuse', async (t) => {
  const secret = '0123456789abcdef0123456789abcdef'
  t.same(problemsOf(yamlOf({ tokens: { keys: [{ kid: 'k1', secret }, { kid: 'k1', secret }, { kid: 'k2' }] } })).sort(), [
    "tokens.keys[1].kid: duplicate kid 'k1' (also at index 0)",
    'tokens.keys[2].secret: is required with algorithm HS256'
  ])
})

t.test('upstream URLs the route table cannot use are refused at load, with their path', async (t) => {
  const up = (url: string) => ({ name: 's', url, weight: 1 })
  const route = (name: string, url: string) => ({ name, prefix: `/${name}`, upstreams: [up(url)] })
  t.same(problemsOf(yamlOf({
    routes: [route('a', 'http://user:pw@127.0.0.1:1'), route('b', 'http://127.0.0.1:1/x?y=1'), route('c', 'http://127.0.0.1:1//x'), route('d', 'http://[::1')]
  })).sort(), [
    'routes[0].upstreams[0].url: must not carry credentials',
    'routes[1].upstreams[0].url: must not have a query or fragment',
    'routes[2].upstreams[0].url: path must not contain //',
    'routes[3].upstreams[0].url: is not a valid URL'
  ])
})
