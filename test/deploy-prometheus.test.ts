/**
 * deploy/prometheus: the alert rules load in Prometheus (`promtool check rules`),
 * behave as their unit tests say (`promtool test rules`: each alert fires on a
 * bad series and stays quiet on a healthy one), link to a runbook section that
 * exists, and the example scrape config is valid and scrapes the admin port the
 * Deployment annotates. promtool comes from Debian's `prometheus` package.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse, parseAllDocuments } from 'yaml'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const promDir = join(root, 'deploy/prometheus')

interface Rule { alert?: string, record?: string, expr: string, for?: string, labels?: Record<string, string>, annotations?: Record<string, string> }
interface RuleFile { groups: Array<{ name: string, rules: Rule[] }> }
interface AlertTest { eval_time: string, alertname: string, exp_alerts?: unknown[] }
interface TestFile { rule_files: string[], tests: Array<{ name: string, alert_rule_test?: AlertTest[] }> }
interface RelabelConfig { source_labels?: string[], regex?: string, action?: string, target_label?: string, replacement?: string }
interface PromConfig { rule_files?: string[], scrape_configs: Array<{ job_name: string, kubernetes_sd_configs?: unknown[], static_configs?: unknown[], relabel_configs?: RelabelConfig[] }> }

function promtool (...args: string[]): { status: number | null, output: string } {
  const r = spawnSync('promtool', args, { cwd: promDir, encoding: 'utf8', timeout: 60_000 })
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error('promtool not found: install it with `apt-get install -y prometheus` (Debian package `prometheus`)')
  }
  return { status: r.status, output: `${r.stdout}${r.stderr}` }
}

const alerts = parse(readFileSync(join(promDir, 'alerts.yml'), 'utf8')) as RuleFile
const alertRules = alerts.groups.flatMap((g) => g.rules).filter((r) => r.alert !== undefined)

t.test('promtool is installed (Debian package `prometheus`)', async (t) => {
  const r = spawnSync('promtool', ['--version'], { encoding: 'utf8' })
  t.equal(r.error, undefined, 'promtool not found: install it with `apt-get install -y prometheus`')
  t.equal(r.status, 0)
})

t.test('promtool check rules accepts alerts.yml', async (t) => {
  const r = promtool('check', 'rules', 'alerts.yml')
  t.equal(r.status, 0, r.output)
  t.match(r.output, /SUCCESS: \d+ rules found/)
})

t.test('promtool test rules: every alert fires on bad series and not on healthy ones', async (t) => {
  const r = promtool('test', 'rules', 'alerts.test.yml')
  t.equal(r.status, 0, r.output)
  t.match(r.output, /SUCCESS/)
})

t.test('a broken rule fails its unit test (the tests can fail)', async (t) => {
  // Raise the 5xx threshold to 50 %: the firing case in alerts.test.yml must now fail.
  const dir = mkdtempSync(join(tmpdir(), 'wegate-prom-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const text = readFileSync(join(promDir, 'alerts.yml'), 'utf8')
  const broken = text.replace('          ) > 0.01\n', '          ) > 0.5\n')
  t.not(broken, text, 'the mutation applied')
  writeFileSync(join(dir, 'alerts.yml'), broken)
  copyFileSync(join(promDir, 'alerts.test.yml'), join(dir, 'alerts.test.yml'))
  const r = spawnSync('promtool', ['test', 'rules', 'alerts.test.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
  t.not(r.status, 0)
  t.match(`${r.stdout}${r.stderr}`, /WegateHigh5xxRatio/)
})

t.test('every alert is unit-tested both firing and quiet', async (t) => {
  const tests = parse(readFileSync(join(promDir, 'alerts.test.yml'), 'utf8')) as TestFile
  t.same(tests.rule_files, ['alerts.yml'])
  const cases = tests.tests.flatMap((x) => x.alert_rule_test ?? [])
  for (const rule of alertRules) {
    const mine = cases.filter((c) => c.alertname === rule.alert)
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length > 0), `${rule.alert} has a case where it fires`)
    t.ok(mine.some((c) => (c.exp_alerts ?? []).length === 0), `${rule.alert} has a case where it must not fire`)
  }
})

t.test('the alerts the SRE asked for exist, with severity, summary, description and runbook', async (t) => {
  const byName = new Map(alertRules.map((r) => [r.alert, r]))
  const want: Record<string, RegExp> = {
    WegateHigh5xxRatio: /wegate_requests_total\{status_class="5xx"\}/,
    WegateHighLatencyP99: /histogram_quantile\(0\.99,.*wegate_request_duration_seconds_bucket/,
    WegateCanaryRolledBack: /increase\(wegate_canary_rollbacks_total\[5m\]\)/,
    WegateLoginFailureSpike: /wegate_logins_total\{result="failure"\}/,
    WegateStoreDown: /wegate_store_up == 0/,
    WegateConfigReloadFailing: /increase\(wegate_config_reloads_total\{result="failure"\}\[10m\]\)/,
    WegateInstanceDown: /up\{job="wegate"\} == 0/
  }
  for (const [name, expr] of Object.entries(want)) {
    const rule = byName.get(name)
    t.ok(rule, `${name} exists`)
    t.match(rule?.expr.replace(/\s+/g, ' ') ?? '', expr, `${name} watches the right series`)
  }
  t.equal(byName.get('WegateHigh5xxRatio')?.for, '2m')
  t.equal(byName.get('WegateStoreDown')?.for, '1m')
  const docs = readFileSync(join(root, 'docs/deploying.md'), 'utf8')
  const anchors = new Set([...docs.matchAll(/^#{1,6} (.+)$/gm)].map((m) => githubSlug(m[1])))
  for (const rule of alertRules) {
    t.match(rule.labels?.severity ?? '', /^(critical|warning|info)$/, `${rule.alert} has a severity`)
    t.ok(rule.annotations?.summary, `${rule.alert} has a summary`)
    t.ok(rule.annotations?.description, `${rule.alert} has a description`)
    const link = rule.annotations?.runbook_url ?? ''
    const m = /^docs\/deploying\.md#(.+)$/.exec(link)
    t.ok(m, `${rule.alert} links a docs/deploying.md runbook`)
    t.ok(m !== null && anchors.has(m[1]), `runbook anchor #${m?.[1] ?? '?'} exists in docs/deploying.md`)
  }
})

/** The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes. */
function githubSlug (heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

t.test('the example scrape config is valid and scrapes the admin port the pods annotate', async (t) => {
  const config = parse(readFileSync(join(promDir, 'prometheus.yml'), 'utf8')) as PromConfig
  let r = promtool('check', 'config', 'prometheus.yml')
  if (r.status !== 0 && /field kubernetes_sd_configs not found/.test(r.output)) {
    // Debian builds Prometheus without Kubernetes service discovery; check everything
    // else (relabel regexes, rule files) with the discovery swapped for a static target.
    t.comment('this promtool lacks kubernetes_sd: checking the config with static_configs in its place')
    const dir = mkdtempSync(join(tmpdir(), 'wegate-prom-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const copy = structuredClone(config)
    for (const sc of copy.scrape_configs) {
      if (sc.kubernetes_sd_configs === undefined) continue
      delete sc.kubernetes_sd_configs
      sc.static_configs = [{ targets: ['127.0.0.1:9091'] }]
    }
    writeFileSync(join(dir, 'prometheus.yml'), JSON.stringify(copy))
    copyFileSync(join(promDir, 'alerts.yml'), join(dir, 'alerts.yml'))
    const s = spawnSync('promtool', ['check', 'config', 'prometheus.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
    r = { status: s.status, output: `${s.stdout}${s.stderr}` }
  }
  t.equal(r.status, 0, r.output)
  t.same(config.rule_files, ['alerts.yml'])

  const job = config.scrape_configs.find((s) => s.job_name === 'wegate')
  t.ok(job, 'a job named wegate (the alerts select job="wegate")')
  t.ok(job?.kubernetes_sd_configs, 'discovers pods through Kubernetes')
  const relabel = job?.relabel_configs ?? []
  t.ok(relabel.some((c) => c.action === 'keep' && c.source_labels?.[0] === '__meta_kubernetes_pod_annotation_prometheus_io_scrape'))

  // Apply the port rewrite as Prometheus would (RE2 and JS agree on this regex).
  const deployment = parseAllDocuments(readFileSync(join(root, 'deploy/kubernetes/base/deployment.yaml'), 'utf8'))[0].toJS() as {
    spec: { template: { metadata: { annotations: Record<string, string> } } }
  }
  const port = deployment.spec.template.metadata.annotations['prometheus.io/port']
  const rewrite = relabel.find((c) => c.target_label === '__address__')
  t.ok(rewrite?.regex !== undefined && rewrite.replacement !== undefined)
  const re = new RegExp(`^(?:${rewrite?.regex ?? ''})$`)
  const address = `10.1.2.3:8080;${port}`.replace(re, rewrite?.replacement ?? '')
  t.equal(address, '10.1.2.3:9091', 'the pod address is rewritten to the admin port')
})
