/**
 * The metrics an SRE dashboards and alerts on: every family present after real
 * traffic, bounded labels, and the exposition passes `promtool check metrics`.
 */
import { spawnSync } from 'node:child_process'
import t from 'tap'
import { request } from 'undici'
import { createWeChatEmulator } from '../src/emulator/wechat.js'
import { startGateway } from './helpers/gateway.js'
import { startUpstream } from './helpers/upstream.js'

const FAMILIES = [
  'wegate_requests_total', 'wegate_request_duration_seconds', 'wegate_upstream_duration_seconds',
  'wegate_upstream_errors_total', 'wegate_logins_total', 'wegate_refreshes_total', 'wegate_token_rejections_total',
  'wegate_revocations_total', 'wegate_rate_limited_total', 'wegate_upstream_weight', 'wegate_canary_rollbacks_total',
  'wegate_config_reloads_total', 'wegate_config_last_reload_success_timestamp_seconds', 'wegate_config_info',
  'wegate_store_up', 'wegate_store_operation_duration_seconds', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds'
]

t.test('every metric family is exported and promtool accepts the exposition', async (t) => {
  const emulator = createWeChatEmulator()
  const wechatUrl = await emulator.listen()
  t.teardown(emulator.close)
  const api = await startUpstream(t, 'api')
  const gw = await startGateway(t, {
    wechat: { baseUrl: wechatUrl },
    rateLimits: { login: { max: 2, window: '1m' } },
    routes: [{
      name: 'orders',
      prefix: '/orders',
      upstreams: [{ name: 'stable', url: api.url, weight: 9 }, { name: 'canary', url: 'http://127.0.0.1:9', weight: 1 }],
      canary: { sticky: 'openid', header: 'X-Canary', rollback: { upstream: 'canary', minRequests: 1000 } }
    }]
  })
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const res = await request(`${gw.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    return { status: res.statusCode, body: await res.body.json() as { data: { accessToken: string, refreshToken: string } } }
  }
  const ok = await post('/auth/login', { code: 'u-m-1' })
  await post('/auth/login', { code: 'err40029-x' })
  await post('/auth/login', { code: 'u-m-2' }) // rate limited
  const refreshed = await post('/auth/refresh', { refreshToken: ok.body.data.refreshToken })
  const token = refreshed.body.data.accessToken
  for (let i = 0; i < 30; i++) {
    const res = await request(`${gw.url}/orders/${i}`, { headers: { authorization: `Bearer ${i === 0 ? 'garbage' : token}`, 'x-canary': i === 1 ? 'canary' : '' } })
    await res.body.dump()
  }
  await post('/auth/logout', {}, { authorization: `Bearer ${token}` })

  const text = await (await request(`${gw.adminUrl}/metrics`)).body.text()
  for (const family of FAMILIES) t.match(text, new RegExp(`^# TYPE ${family} `, 'm'), `${family} exported`)
  t.match(text, /^wegate_logins_total\{app="wx00000000000demo0",result="success",errcode="0"\} 1$/m)
  t.match(text, /^wegate_logins_total\{app="wx00000000000demo0",result="failure",errcode="40029"\} 1$/m)
  t.match(text, /^wegate_refreshes_total\{result="rotated"\} 1$/m)
  t.match(text, /^wegate_token_rejections_total\{reason="malformed"\} 1$/m)
  t.match(text, /^wegate_upstream_errors_total\{route="orders",upstream="canary",kind="refused"\} 1$/m)
  t.match(text, /^wegate_requests_total\{route="orders",upstream="stable",method="GET",status_class="2xx"\} 28$/m, 'one request forced to the canary by the tester header')
  t.match(text, /^wegate_rate_limited_total\{route="auth_login"\} 1$/m)
  t.match(text, /^wegate_revocations_total\{kind="token"\} 1$/m)
  t.match(text, /^wegate_store_up 1$/m)
  t.notMatch(text, /="\/orders|openid=|="o[A-Za-z0-9_-]{27}"/, 'no raw paths or openids in labels')

  const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })
  if (lint.error !== undefined) t.fail('promtool not found: install it with `apt-get install -y prometheus`')
  else t.equal(lint.status, 0, `promtool check metrics: ${lint.stdout}${lint.stderr}`)
})
