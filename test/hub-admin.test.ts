import { spawn } from 'node:child_process'
import t from 'tap'
import { APP_A, get, metric, post, startEcho } from './helpers/auth.js'
import { startGateway, writeConfigFile } from './helpers/gateway.js'
import { ADMIN_TOKEN, hubConfig, startHubEmulator } from './helpers/hub.js'

const echoUrl = await startEcho(t)
const { emu, url: wechatUrl } = await startHubEmulator(t)
let clock = Date.now()
const gw = await startGateway(t, hubConfig({ wechatUrl, echoUrl, apiToken: ADMIN_TOKEN }), { now: () => clock })
const tokenUrl = `${gw.adminUrl}/wechat/access-token?appId=${APP_A.appId}`
const refreshUrl = `${gw.adminUrl}/wechat/access-token/refresh?appId=${APP_A.appId}`
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }

t.test('no admin.apiToken configured: the endpoints do not exist (404)', async (t) => {
  const plain = await startGateway(t, hubConfig({ wechatUrl, echoUrl }))
  for (const a of [await get(`${plain.adminUrl}/wechat/access-token?appId=${APP_A.appId}`, admin), await post(`${plain.adminUrl}/wechat/access-token/refresh?appId=${APP_A.appId}`, {}, admin)]) {
    t.equal(a.status, 404)
    t.equal(a.json?.code, 30004)
  }
})

t.test('missing or wrong token: 401 envelope, before anything else is looked at', async (t) => {
  const cases: Array<[string, Record<string, string>]> = [
    ['none', {}],
    ['wrong', { authorization: 'Bearer not-the-admin-token-0123456789-abcdefgh' }],
    ['a prefix of it', { authorization: `Bearer ${ADMIN_TOKEN.slice(0, -1)}` }],
    ['longer', { authorization: `Bearer ${ADMIN_TOKEN}x` }],
    ['another scheme', { authorization: `Basic ${ADMIN_TOKEN}` }],
    ['the token alone', { authorization: ADMIN_TOKEN }]
  ]
  for (const [what, headers] of cases) {
    const a = await get(tokenUrl, headers)
    t.equal(a.status, 401, what)
    t.equal(a.json?.code, 20013, what)
    t.match(a.headers.get('www-authenticate'), /^Bearer/, what)
    t.equal((await post(refreshUrl, {}, headers)).status, 401, `${what} (refresh)`)
  }
  t.equal((await get(`${gw.adminUrl}/wechat/access-token`, {})).status, 401, 'no appId and no token: still 401')
  t.equal(emu.tokenCalls, 0, 'WeChat never asked')
})

t.test('the right token: the app\'s shared access_token, not cached by anyone', async (t) => {
  const a = await get(tokenUrl, admin)
  t.equal(a.status, 200)
  t.same(a.json, { code: 200, message: 'ok', data: { accessToken: emu.currentToken(APP_A.appId), expiresIn: 7200 } })
  t.equal(a.headers.get('cache-control'), 'no-store')
  t.equal((await get(tokenUrl, { authorization: `bearer ${ADMIN_TOKEN}` })).status, 200, 'scheme in any case')
  const calls = emu.tokenCalls
  await get(tokenUrl, admin)
  t.equal(emu.tokenCalls, calls, 'served from the cache')
  t.equal((await get(`${gw.adminUrl}/wechat/access-token`, admin)).json?.code, 40001, 'appId missing')
  t.equal((await get(`${gw.adminUrl}/wechat/access-token?appId=wxnotconfigured00`, admin)).json?.code, 40002, 'unknown appId')
})

t.test('a backend that got 40001 asks for a refresh: forced once per 30 s, however many ask', async (t) => {
  const old = (await get(tokenUrl, admin)).json?.data.accessToken as string
  const forced = emu.forcedRefreshes
  const answers = await Promise.all(Array.from({ length: 10 }, () => post(refreshUrl, {}, admin)))
  const tokens = new Set(answers.map((a) => a.json?.data.accessToken as string))
  t.equal(tokens.size, 1, 'every backend gets the same new token')
  t.not([...tokens][0], old)
  t.equal(emu.forcedRefreshes - forced, 1)
  clock += 10_000
  t.equal((await post(refreshUrl, {}, admin)).json?.data.accessToken, [...tokens][0], 'within 30 s: the same token, no new forced refresh')
  t.equal(emu.forcedRefreshes - forced, 1)
  clock += 30_000
  t.not((await post(refreshUrl, {}, admin)).json?.data.accessToken, [...tokens][0], 'after 30 s: a new one')
  t.equal(await metric(gw.adminUrl, 'wegate_wechat_token_refreshes_total', { app: APP_A.appId, reason: 'backend', mode: 'force', result: 'success' }), 2)
  t.ok(await metric(gw.adminUrl, 'wegate_wechat_api_calls_total', { api: 'stable_token', errcode: '0' }) >= 3)
})

t.test('neither the admin token nor an access_token is ever logged', async (t) => {
  const text = gw.logs.text()
  t.notOk(text.includes(ADMIN_TOKEN), 'admin token')
  t.notOk(text.includes(String(emu.currentToken(APP_A.appId))), 'access_token')
})

t.test('wegate check: admin.apiToken shorter than 32 characters is refused with its path', async (t) => {
  const file = await writeConfigFile({ admin: { apiToken: 'short-token' } })
  const r = await new Promise<{ code: number | null, out: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'check', '-c', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (b: Buffer) => { out += b.toString() })
    child.stderr.on('data', (b: Buffer) => { out += b.toString() })
    child.on('close', (code) => resolve({ code, out }))
  })
  t.equal(r.code, 1)
  t.match(r.out, /admin\.apiToken/)
  t.notOk(r.out.includes('short-token'), 'the value is not printed')
})
