/**
 * The OpenAPI description (docs/openapi.json): generated from the route
 * schemas, never edited by hand. It must match what the code generates, be a
 * valid OpenAPI 3.1 document, name every error code, describe what the gateway
 * really answers, and be served on the admin port only.
 */
import { readFileSync } from 'node:fs'
import { Validator } from '@seriousme/openapi-schema-validator'
import { Ajv2020 } from 'ajv/dist/2020.js'
import Fastify from 'fastify'
import t from 'tap'
import { generateOpenApi } from '../src/cli/openapi.js'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { ErrorCatalog } from '../src/errors.js'
import { describeRoutes } from '../src/http/schemas.js'
import { APP_A } from './helpers/auth.js'
import { TEST_JWT_SECRET, startGateway } from './helpers/gateway.js'

const FILE = new URL('../docs/openapi.json', import.meta.url)
const published = readFileSync(FILE, 'utf8')
type Doc = { paths: Record<string, Record<string, Operation | unknown>>, components: { schemas: Record<string, { oneOf?: Array<{ const: number, title: string, description: string }> }> } }
type Operation = { responses: Record<string, { content?: Record<string, { schema: object }> }> }
const doc = JSON.parse(published) as Doc

type Spec = Parameters<Validator['validate']>[0]

const ADMIN_TOKEN = 'admin-token-for-the-openapi-test-0123456789'

t.test('docs/openapi.json is what the code generates (npm run openapi)', async (t) => {
  const generated = await generateOpenApi()
  t.ok(generated === published, 'docs/openapi.json is stale: run `npm run openapi` and commit docs/openapi.json')
  t.ok(published.endsWith('}\n'), 'ends with a newline')
  t.equal(published, JSON.stringify(JSON.parse(published), null, 2) + '\n', 'pretty-printed with two spaces')
  t.equal(await generateOpenApi(), generated, 'the same text every time (stable key order)')
})

t.test('it is a valid OpenAPI 3.1 document (and the validator does refuse a broken one)', async (t) => {
  const validator = new Validator()
  const res = await validator.validate(JSON.parse(published) as Spec)
  t.same(res.errors, undefined, 'no errors')
  t.equal(res.valid, true)
  t.equal(validator.version, '3.1')
  const broken = JSON.parse(published) as Record<string, unknown>
  delete broken.info
  t.equal((await new Validator().validate(broken as Spec)).valid, false, 'a document without info is refused')
})

t.test('every response schema compiles as JSON Schema 2020-12', async (t) => {
  const ajv = new Ajv2020({ strict: true })
  let n = 0
  for (const op of operations()) {
    for (const r of Object.values(op.responses)) {
      for (const media of Object.values(r.content ?? {})) {
        ajv.compile(media.schema)
        n++
      }
    }
  }
  t.ok(n > 50, `${n} response schemas`)
})

t.test('every ErrorCatalog code is in the document, with its name and status', async (t) => {
  const listed = doc.components.schemas.ErrorCode?.oneOf ?? []
  for (const [name, e] of Object.entries(ErrorCatalog)) {
    const entry = listed.find((c) => c.const === e.code)
    t.equal(entry?.title, name, `${e.code} ${name} in ErrorCode`)
    t.match(entry?.description, `HTTP ${e.status}: ${e.message}`)
  }
  t.equal(listed.length, Object.keys(ErrorCatalog).length, 'nothing else')
  // Each operation's error responses: catalog codes, under their own HTTP status.
  const byCode = new Map<number, number>(Object.values(ErrorCatalog).map((e) => [e.code, e.status]))
  const used = new Set<number>()
  for (const op of operations()) {
    for (const [status, r] of Object.entries(op.responses)) {
      const schema = r.content?.['application/json']?.schema as { properties?: { code?: { enum?: number[] } } } | undefined
      for (const code of schema?.properties?.code?.enum ?? []) {
        if (code === 200) continue
        t.equal(byCode.get(code), Number(status), `${code} is documented under its status ${status}`)
        used.add(code)
      }
    }
  }
  t.ok(used.size >= 40, `${used.size} codes are named by the operations that answer them`)
})

t.test('the public and the admin API, told apart', async (t) => {
  const publicPaths = ['/.well-known/jwks.json', '/auth/decrypt', '/auth/login', '/auth/logout', '/auth/phone', '/auth/refresh', '/auth/session', '/auth/wechat/authorize', '/auth/wechat/callback']
  const adminPaths = ['/healthz', '/metrics', '/openapi.json', '/readyz', '/rollouts', '/rollouts/{route}/{command}', '/wechat/access-token', '/wechat/access-token/refresh']
  t.same(Object.keys(doc.paths).sort(), [...publicPaths, ...adminPaths].sort(), 'the gateway\'s own paths; no proxied catch-all, no 405 answers')
  for (const p of adminPaths) t.match(doc.paths[p], { servers: [{ url: 'http://127.0.0.1:9091' }] }, `${p}: admin port`)
  for (const p of publicPaths) t.equal(doc.paths[p]?.servers, undefined, `${p}: the document's server (public port)`)
  const security = (p: string, m: string) => (doc.paths[p]?.[m] as { security?: unknown }).security
  t.same(security('/wechat/access-token', 'get'), [{ adminToken: [] }])
  t.same(security('/rollouts/{route}/{command}', 'post'), [{ adminToken: [] }])
  t.same(security('/auth/decrypt', 'post'), [{ accessToken: [] }])
  t.same(security('/auth/login', 'post'), [])
  t.same(security('/metrics', 'get'), [])
  t.match(published, /X-OpenID[\s\S]*X-UnionID[\s\S]*X-AppID[\s\S]*X-WeGate-Channel[\s\S]*X-Phone-Number/, 'the identity headers contract')
})

t.test('real answers validate against the described schemas', async (t) => {
  const emulator = createWeChatEmulator({ apps: [APP_A] })
  const wechatUrl = await emulator.listen({ port: 0 })
  t.teardown(async () => { await emulator.close() })
  const { url, adminUrl } = await startGateway(t, { wechat: { baseUrl: wechatUrl, apps: [APP_A] }, admin: { apiToken: ADMIN_TOKEN } })
  const ajv = new Ajv2020({ strict: true })
  const check = async (res: Response, path: string, method: string): Promise<unknown> => {
    const body = await res.json() as unknown
    const op = doc.paths[path]?.[method] as Operation
    const schema = op.responses[String(res.status)]?.content?.['application/json']?.schema
    if (schema === undefined) {
      t.fail(`${method.toUpperCase()} ${path} ${res.status} is not described`)
      return body
    }
    const validate = ajv.compile(schema)
    t.ok(validate(body), `${method.toUpperCase()} ${path} ${res.status} ${JSON.stringify(body).slice(0, 80)}: ${ajv.errorsText(validate.errors)}`)
    return body
  }
  const json = { 'content-type': 'application/json' }

  const login = await fetch(`${url}/auth/login`, { method: 'POST', headers: json, body: JSON.stringify({ code: 'openapi-1' }) })
  t.equal(login.status, 200)
  const pair = (await check(login, '/auth/login', 'post') as { data: { refreshToken: string } }).data
  const refreshed = await fetch(`${url}/auth/refresh`, { method: 'POST', headers: json, body: JSON.stringify({ refreshToken: pair.refreshToken }) })
  t.equal(refreshed.status, 200)
  const next = (await check(refreshed, '/auth/refresh', 'post') as { data: { accessToken: string } }).data
  const forged = await fetch(`${url}/auth/refresh`, { method: 'POST', headers: json, body: JSON.stringify({ refreshToken: 'not-a-refresh-token' }) })
  t.equal(forged.status, 401)
  t.match(await check(forged, '/auth/refresh', 'post'), { code: 20010 })
  const noToken = await fetch(`${url}/auth/logout`, { method: 'POST' })
  t.equal(noToken.status, 401)
  t.match(await check(noToken, '/auth/logout', 'post'), { code: 20001, data: null })
  const invalid = await fetch(`${url}/auth/login`, { method: 'POST', headers: json, body: JSON.stringify({ code: 7 }) })
  t.equal(invalid.status, 400)
  t.match(await check(invalid, '/auth/login', 'post'), { code: 40001, data: { errors: [{ path: 'body.code' }] } })
  const session = await fetch(`${url}/auth/session`, { headers: { authorization: `Bearer ${next.accessToken}` } })
  t.equal(session.status, 200)
  await check(session, '/auth/session', 'get')
  const jwks = await fetch(`${url}/.well-known/jwks.json`)
  t.equal(jwks.status, 404, 'HS256: no public keys')
  t.match(await check(jwks, '/.well-known/jwks.json', 'get'), { code: 30032 })

  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }
  const token = await fetch(`${adminUrl}/wechat/access-token?appId=${APP_A.appId}`, { headers: admin })
  t.equal(token.status, 200)
  await check(token, '/wechat/access-token', 'get')
  const refused = await fetch(`${adminUrl}/rollouts`, { headers: { authorization: 'Bearer wrong' } })
  t.equal(refused.status, 401)
  t.match(await check(refused, '/rollouts', 'get'), { code: 20013 })
  const rollouts = await fetch(`${adminUrl}/rollouts`, { headers: admin })
  t.equal(rollouts.status, 200)
  await check(rollouts, '/rollouts', 'get')
  const unknown = await fetch(`${adminUrl}/rollouts/nope/pause`, { method: 'POST', headers: admin })
  t.equal(unknown.status, 404)
  t.match(await check(unknown, '/rollouts/{route}/{command}', 'post'), { code: 30035, data: { route: 'nope' } })
  for (const probe of ['/healthz', '/readyz']) {
    const res = await fetch(adminUrl + probe)
    t.equal(res.status, 200)
    await check(res, probe, 'get')
  }

  await logout(url, next.accessToken)
  await (async () => {
    // A logged-out token is a 401 with 20006 on any endpoint that takes one.
    const res = await fetch(`${url}/auth/session`, { headers: { authorization: `Bearer ${next.accessToken}` } })
    t.equal(res.status, 401)
    t.match(await check(res, '/auth/session', 'get'), { code: 20006 })
  })()
})

async function logout (url: string, accessToken: string): Promise<void> {
  const res = await fetch(`${url}/auth/logout`, { method: 'POST', headers: { authorization: `Bearer ${accessToken}` } })
  if (res.status !== 200) throw new Error(`logout answered ${res.status}`)
  await res.body?.cancel()
}

t.test('served on the admin port as GET /openapi.json, never on the public port', async (t) => {
  const { url, adminUrl } = await startGateway(t, { admin: { apiToken: ADMIN_TOKEN } })
  const res = await fetch(`${adminUrl}/openapi.json`)
  t.equal(res.status, 200, 'no admin token needed')
  t.match(res.headers.get('content-type'), /^application\/json/)
  const text = await res.text()
  const served = JSON.parse(text) as Doc & { servers: Array<{ url: string }> }
  t.same(Object.keys(served.paths), Object.keys(doc.paths), 'the same API as docs/openapi.json')
  t.match(served.servers, [{ url: /^http:\/\/127\.0\.0\.1:0$/ }], 'servers from this gateway\'s config')
  for (const secret of [ADMIN_TOKEN, TEST_JWT_SECRET, APP_A.secret]) t.notOk(text.includes(secret), 'no secret in it')
  const again = await fetch(`${adminUrl}/openapi.json`)
  t.equal(await again.text(), text, 'built once, the same text after')

  const pub = await fetch(`${url}/openapi.json`)
  t.equal(pub.status, 404)
  t.match(await pub.json(), { code: 30004 })
})

t.test('without admin.apiToken the document leaves out the endpoints that do not exist', async (t) => {
  const { adminUrl } = await startGateway(t)
  const served = await (await fetch(`${adminUrl}/openapi.json`)).json() as Doc
  t.notOk('/rollouts' in served.paths)
  t.notOk('/wechat/access-token' in served.paths)
  t.ok('/auth/login' in served.paths && '/healthz' in served.paths)
})

t.test('describing routes adds nothing to the request path: only start-time hooks', async (t) => {
  const app = Fastify()
  const added: string[] = []
  const addHook = app.addHook.bind(app)
  app.addHook = ((name: string, fn: never) => { added.push(name); return addHook(name as 'onRoute', fn) }) as typeof app.addHook
  await describeRoutes(app)
  t.same([...new Set(added)].sort(), ['onReady', 'onRegister', 'onRoute'])
  await app.close()
})

function operations (): Operation[] {
  const ops: Operation[] = []
  for (const item of Object.values(doc.paths)) {
    for (const [key, op] of Object.entries(item)) if (key !== 'servers') ops.push(op as Operation)
  }
  return ops
}
