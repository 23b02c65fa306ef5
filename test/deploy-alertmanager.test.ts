/**
 * deploy/alertmanager: the config loads (`amtool check-config`, templates
 * included), every alert of deploy/prometheus/alerts.yml is routed by its
 * severity (`amtool config routes test`), and a real Alertmanager built from it
 * (Debian's `prometheus-alertmanager`) delivers a critical to the WeCom group and
 * the SMS webhook, a warning to WeCom only, mutes a warning that a critical about
 * the same route covers, and puts the runbook link in the WeCom message.
 */
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { createServer, type IncomingMessage } from 'node:http'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse, stringify } from 'yaml'
import { freePort } from './helpers/redis.js'
import { waitUntil } from './helpers/wait.js'
import type { TestContext } from './helpers/gateway.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const amDir = join(root, 'deploy/alertmanager')
const HINT = 'install it with `apt-get install -y prometheus-alertmanager` (Debian package `prometheus-alertmanager`)'

interface Receiver { name: string, wechat_configs?: Array<Record<string, unknown>>, webhook_configs?: Array<{ url: string }> }
interface AmConfig {
  global: Record<string, unknown>
  route: { receiver: string, group_wait?: string, group_interval?: string, routes?: Array<Record<string, unknown>> }
  inhibit_rules: Array<{ source_matchers: string[], target_matchers: string[], equal?: string[] }>
  receivers: Receiver[]
}
interface Rule { alert?: string, labels?: Record<string, string> }

function amtool (cwd: string, ...args: string[]): { status: number | null, output: string } {
  const r = spawnSync('amtool', args, { cwd, encoding: 'utf8', timeout: 60_000 })
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`amtool not found: ${HINT}`)
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

const config = parse(readFileSync(join(amDir, 'alertmanager.yml'), 'utf8')) as AmConfig
const alertRules = (parse(readFileSync(join(root, 'deploy/prometheus/alerts.yml'), 'utf8')) as { groups: Array<{ rules: Rule[] }> })
  .groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined)

t.test('amtool is installed (Debian package `prometheus-alertmanager`)', async (t) => {
  const r = spawnSync('amtool', ['--version'], { encoding: 'utf8' })
  t.equal(r.error, undefined, `amtool not found: ${HINT}`)
  t.equal(r.status, 0)
})

t.test('amtool check-config accepts alertmanager.yml and its templates', async (t) => {
  const r = amtool(amDir, 'check-config', 'alertmanager.yml')
  t.equal(r.status, 0, r.output)
  t.match(r.output, /SUCCESS/)
  t.match(r.output, /1 templates/)
  t.match(r.output, /4 inhibit rules/)
})

t.test('a broken config is refused (the check can fail)', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'wegate-am-'))
  cpSync(amDir, dir, { recursive: true })
  writeFileSync(join(dir, 'alertmanager.yml'), readFileSync(join(amDir, 'alertmanager.yml'), 'utf8').replace('receiver: oncall-critical', 'receiver: oncall-typo'))
  const r = amtool(dir, 'check-config', 'alertmanager.yml')
  t.not(r.status, 0)
  t.match(r.output, /oncall-typo/)
})

t.test('every alert is routed by its severity: critical to SMS + WeCom, warning to WeCom', async (t) => {
  const want: Record<string, string> = { critical: 'oncall-critical', warning: 'wecom-ops' }
  t.ok(alertRules.length >= 10)
  for (const rule of alertRules) {
    const severity = rule.labels?.severity ?? ''
    const r = amtool(amDir, 'config', 'routes', 'test', '--config.file=alertmanager.yml', `alertname=${rule.alert ?? ''}`, `severity=${severity}`, 'route=api', 'app=wx1', 'instance=10.0.0.1:9091')
    t.equal(r.status, 0, r.output)
    t.equal(r.output.split('\n').find((l) => l !== '' && !l.startsWith('Warning:')), want[severity], `${rule.alert} (${severity})`)
  }
  const byName = new Map(config.receivers.map((r) => [r.name, r]))
  t.ok(byName.get('oncall-critical')?.wechat_configs?.length === 1 && byName.get('oncall-critical')?.webhook_configs?.length === 1, 'critical: WeCom and the SMS webhook')
  t.ok(byName.get('wecom-ops')?.wechat_configs?.length === 1 && byName.get('wecom-ops')?.webhook_configs === undefined, 'warning: WeCom only')
  t.equal(config.global.wechat_api_url, 'https://qyapi.weixin.qq.com/cgi-bin/')
})

interface Captured { path: string, body: string }

/** One local server standing in for WeCom's API (gettoken, message/send) and the SMS gateway. */
async function fakeWeComAndSms (t: TestContext): Promise<{ url: string, wecom: Captured[], sms: Captured[] }> {
  const wecom: Captured[] = []
  const sms: Captured[] = []
  const server = createServer((req: IncomingMessage, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      const path = req.url ?? ''
      res.setHeader('content-type', 'application/json')
      if (path.startsWith('/cgi-bin/gettoken')) { res.end(JSON.stringify({ errcode: 0, errmsg: 'ok', access_token: 'tok', expires_in: 7200 })); return }
      if (path.startsWith('/cgi-bin/message/send')) wecom.push({ path, body })
      if (path.startsWith('/sms')) sms.push({ path, body })
      res.end(JSON.stringify({ errcode: 0, errmsg: 'ok' }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  // Alertmanager keeps its connections alive: close them, or close() waits for them.
  t.teardown(() => new Promise<void>((resolve) => { server.close(() => resolve()); server.closeAllConnections() }))
  const address = server.address()
  return { url: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`, wecom, sms }
}

t.test('a real Alertmanager: critical to WeCom + SMS, warning to WeCom, covered warning muted', async (t) => {
  const fake = await fakeWeComAndSms(t)
  const dir = mkdtempSync(join(tmpdir(), 'wegate-am-'))
  cpSync(amDir, dir, { recursive: true })
  // Only the endpoints and the waits change: the routes, receivers, inhibitions and templates are the file's.
  const copy = structuredClone(config)
  copy.global.wechat_api_url = `${fake.url}/cgi-bin/`
  for (const r of copy.receivers) for (const w of r.webhook_configs ?? []) w.url = `${fake.url}/sms`
  copy.route.group_wait = '200ms'
  for (const r of copy.route.routes ?? []) r.group_wait = '200ms'
  writeFileSync(join(dir, 'alertmanager.yml'), stringify(copy))
  const port = await freePort()
  const am = spawn('prometheus-alertmanager', ['--config.file=alertmanager.yml', `--storage.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`, '--cluster.listen-address='], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  am.stderr.on('data', (c: Buffer) => { log += c.toString() })
  // Alertmanager writes into dir until it has exited: stop it, then remove dir.
  t.teardown(async () => {
    if (am.exitCode === null && am.signalCode === null) {
      am.kill()
      await once(am, 'exit')
    }
    rmSync(dir, { recursive: true, force: true })
  })
  const api = `http://127.0.0.1:${port}/api/v2`
  await waitUntil(async () => (await fetch(`${api}/status`).catch(() => undefined))?.ok === true, 20_000, 50)

  const alert = (labels: Record<string, string>, runbook: string) => ({
    labels: { job: 'wegate', ...labels },
    annotations: { summary: `${labels.alertname} summary`, description: 'what happened', runbook_url: `docs/deploying.md#${runbook}` }
  })
  const posted = await fetch(`${api}/alerts`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify([
      alert({ alertname: 'WegateHigh5xxRatio', severity: 'critical', route: 'api', upstream: 'v1' }, 'wegatehigh5xxratio'),
      alert({ alertname: 'WegateHighLatencyP99', severity: 'warning', route: 'api' }, 'wegatehighlatencyp99'),
      alert({ alertname: 'WegateConfigReloadFailing', severity: 'warning', instance: '10.0.0.1:9091' }, 'wegateconfigreloadfailing')
    ])
  })
  t.equal(posted.status, 200, log)
  await waitUntil(() => fake.wecom.length >= 2 && fake.sms.length >= 1, 15_000, 50).catch(() => { t.fail(`notifications: ${log}`) })

  const messages = fake.wecom.map((c) => JSON.parse(c.body) as { toparty?: string, agentid?: string, msgtype?: string, markdown?: { content: string } })
  const critical = messages.find((m) => m.markdown?.content.includes('WegateHigh5xxRatio'))
  t.ok(critical, 'the critical reached WeCom')
  t.equal(critical?.toparty, '2', 'to the ops group (department)')
  t.equal(critical?.msgtype, 'markdown')
  t.match(critical?.markdown?.content ?? '', /\[CRITICAL\] WegateHigh5xxRatio/)
  t.match(critical?.markdown?.content ?? '', /\[Runbook\]\(https:\/\/\S+\/docs\/deploying\.md#wegatehigh5xxratio\)/, 'the runbook is a link')
  t.ok(messages.some((m) => m.markdown?.content.includes('WegateConfigReloadFailing')), 'the uncovered warning reached WeCom')
  t.ok(fake.wecom.every((c) => c.path.includes('access_token=tok')), 'WeCom messages carry the access_token from gettoken')
  t.equal(fake.sms.length, 1, 'one SMS webhook call')
  const smsBody = JSON.parse(fake.sms[0].body) as { status: string, alerts: Array<{ labels: Record<string, string>, annotations: Record<string, string> }> }
  t.same(smsBody.alerts.map((a) => a.labels.alertname), ['WegateHigh5xxRatio'], 'only the critical is texted')
  t.equal(smsBody.alerts[0].annotations.runbook_url, 'docs/deploying.md#wegatehigh5xxratio')

  const alerts = await (await fetch(`${api}/alerts`)).json() as Array<{ labels: Record<string, string>, status: { state: string, inhibitedBy: string[] } }>
  const latency = alerts.find((a) => a.labels.alertname === 'WegateHighLatencyP99')
  t.equal(latency?.status.state, 'suppressed', 'the latency warning on the failing route is inhibited')
  t.equal(latency?.status.inhibitedBy.length, 1)
  t.equal(alerts.find((a) => a.labels.alertname === 'WegateConfigReloadFailing')?.status.state, 'active')
  t.notOk(messages.some((m) => m.markdown?.content.includes('WegateHighLatencyP99')), 'the inhibited warning was not sent')
})
