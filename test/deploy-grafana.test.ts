/**
 * deploy/grafana/wegate-dashboard.json: it imports (valid JSON, a Prometheus
 * data-source variable, panels that each query it), every query parses as
 * PromQL, and every metric a query or an alert rule reads is one the gateway
 * exports — a renamed metric shows up here, not as an empty panel at 3 am.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parse, stringify } from 'yaml'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const dashboardFile = join(root, 'deploy/grafana/wegate-dashboard.json')

/** What the gateway exports (the metrics contract in DESIGN.md / HELPERS_COMMON.md). */
const counters = [
  'wegate_requests_total', 'wegate_upstream_errors_total', 'wegate_logins_total', 'wegate_refreshes_total',
  'wegate_token_rejections_total', 'wegate_revocations_total', 'wegate_rate_limited_total',
  'wegate_canary_rollbacks_total', 'wegate_config_reloads_total',
  'wegate_wechat_api_calls_total', 'wegate_wechat_token_refreshes_total', 'wegate_decrypts_total', 'wegate_phone_verifications_total',
  'wegate_rollout_decisions_total'
]
const gauges = ['wegate_upstream_weight', 'wegate_config_last_reload_success_timestamp_seconds', 'wegate_config_info', 'wegate_store_up',
  'wegate_rollout_step', 'wegate_rollout_share_percent', 'wegate_rollout_state', 'wegate_rollout_step_requests', 'wegate_rollout_step_errors',
  'wegate_rollout_step_p99_seconds', 'wegate_tls_certificate_expiry_seconds']
const histograms = ['wegate_request_duration_seconds', 'wegate_upstream_duration_seconds', 'wegate_store_operation_duration_seconds']
/** prom-client default metrics the dashboard reads, plus Prometheus' own `up`. */
const defaults = [
  'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes',
  'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'up'
]
/** Grafana substitutes this variable with the data source chosen at import. */
const DS_UID = '$' + '{DS_PROMETHEUS}'
const exported = new Set([
  ...counters, ...gauges, ...defaults,
  ...histograms.flatMap((h) => ['_bucket', '_sum', '_count'].map((s) => h + s))
])

const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool', 'inf', 'nan'])

/** Metric names read by a PromQL expression (Grafana variables allowed). */
function metricNames (expr: string): string[] {
  const cleaned = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""') // label values may contain anything
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ') // label lists
    .replace(/\$\{?\w+\}?/g, ' ') // Grafana variables
    .replace(/(?<![A-Za-z0-9_:])\d[\w.]*/g, ' ') // numbers and durations (0.99, 5m, 1e3)
  const names: string[] = []
  for (const m of cleaned.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*(?=\s*(\()?)/g)) {
    if (m[1] !== undefined) continue // a function call
    if (KEYWORDS.has(m[0].toLowerCase())) continue
    names.push(m[0])
  }
  return names
}

interface Target { expr?: string, refId?: string, datasource?: { type?: string, uid?: string } }
interface Panel { id: number, type: string, title: string, datasource?: { type?: string, uid?: string }, targets?: Target[], gridPos: { x: number, y: number, w: number, h: number }, panels?: Panel[] }
interface Variable { name: string, type: string, query?: unknown }
interface Dashboard { schemaVersion: number, uid: string, title: string, panels: Panel[], templating: { list: Variable[] } }

const dashboard = JSON.parse(readFileSync(dashboardFile, 'utf8')) as Dashboard
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])])
const queryPanels = panels.filter((p) => p.type !== 'row')
const exprs = queryPanels.flatMap((p) => (p.targets ?? []).map((tg) => ({ panel: p.title, expr: tg.expr ?? '' })))

t.test('the dashboard is importable: schema version, uid, a Prometheus data-source variable', async (t) => {
  t.ok(dashboard.schemaVersion >= 36 && dashboard.schemaVersion <= 41, `schemaVersion ${dashboard.schemaVersion}`)
  t.equal(dashboard.uid, 'wegate-gateway')
  const ds = dashboard.templating.list.find((v) => v.name === 'DS_PROMETHEUS')
  t.equal(ds?.type, 'datasource')
  t.equal(ds?.query, 'prometheus')
  t.ok(dashboard.templating.list.some((v) => v.name === 'route' && v.type === 'query'), 'a route variable')
})

t.test('every panel queries Prometheus through the data-source variable', async (t) => {
  t.ok(queryPanels.length >= 15, `${queryPanels.length} panels`)
  const ids = new Set<number>()
  for (const p of panels) {
    t.notOk(ids.has(p.id), `panel id ${p.id} is unique`)
    ids.add(p.id)
    t.ok(p.gridPos.x + p.gridPos.w <= 24, `${p.title} fits the 24-column grid`)
  }
  for (const p of queryPanels) {
    t.same(p.datasource, { type: 'prometheus', uid: DS_UID }, `${p.title}: datasource`)
    t.ok((p.targets ?? []).length > 0, `${p.title}: has targets`)
    for (const tg of p.targets ?? []) {
      t.ok(tg.expr !== undefined && tg.expr.trim() !== '', `${p.title} ${tg.refId ?? ''}: has an expr`)
      t.equal(tg.datasource?.uid, DS_UID, `${p.title} ${tg.refId ?? ''}: target datasource`)
    }
  }
  // Panels must not overlap, or Grafana reflows them into a mess.
  const cells = new Map<string, string>()
  const overlaps = new Set<string>()
  for (const p of panels) {
    for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
      for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
        const other = cells.get(`${x},${y}`)
        if (other !== undefined) overlaps.add(`${p.title} overlaps ${other}`)
        cells.set(`${x},${y}`, p.title)
      }
    }
  }
  t.same([...overlaps], [], 'no two panels overlap')
})

t.test('every metric a panel reads is exported by the gateway', async (t) => {
  t.same(metricNames('sum by (route) (rate(wegate_requests_total{route=~"$route", x="a b"}[$__rate_interval]))'), ['wegate_requests_total'], 'the extractor finds names')
  t.same(metricNames('rate(process_cpu_seconds_total[5m]) and on (instance) wegate_store_up'), ['process_cpu_seconds_total', 'wegate_store_up'])
  for (const { panel, expr } of exprs) {
    const names = metricNames(expr)
    t.ok(names.length > 0, `${panel}: reads a metric`)
    for (const n of names) t.ok(exported.has(n), `${panel}: ${n} is exported`)
  }
  const used = new Set(exprs.flatMap(({ expr }) => metricNames(expr)))
  for (const family of [...counters, ...gauges]) t.ok(used.has(family), `${family} is on the dashboard`)
  for (const h of histograms) t.ok(used.has(`${h}_bucket`), `${h} is on the dashboard`)
})

t.test('every metric an alert rule reads is exported by the gateway', async (t) => {
  const rules = parse(readFileSync(join(root, 'deploy/prometheus/alerts.yml'), 'utf8')) as { groups: Array<{ rules: Array<{ alert: string, expr: string }> }> }
  for (const rule of rules.groups.flatMap((g) => g.rules)) {
    for (const n of metricNames(rule.expr)) t.ok(exported.has(n), `${rule.alert}: ${n} is exported`)
  }
})

t.test('the panels the SRE needs are there', async (t) => {
  const titles = queryPanels.map((p) => p.title.toLowerCase())
  for (const want of ['requests/s', 'traffic split', '5xx ratio', 'p50 / p90 / p99', 'upstream latency', 'upstream errors', 'weights',
    'canary rollbacks', 'logins', 'refreshes', 'token rejections', 'rate-limited', 'config reloads', 'config hash', 'store up',
    'store operation latency', 'cpu', 'memory', 'event-loop lag', 'ramp: canary share', 'ramp: analysis']) {
    t.ok(titles.some((x) => x.includes(want)), `a panel about ${want}`)
  }
  const split = queryPanels.find((p) => p.title.toLowerCase().includes('traffic split')) as Panel & { fieldConfig: { defaults: { custom: { stacking: { mode: string } } } } }
  t.not(split.fieldConfig.defaults.custom.stacking.mode, 'none', 'the traffic split is stacked')
})

t.test('every query parses as PromQL (promtool)', async (t) => {
  const check = spawnSync('promtool', ['--version'], { encoding: 'utf8' })
  t.equal(check.error, undefined, 'promtool not found: install it with `apt-get install -y prometheus` (Debian package `prometheus`)')
  if (check.error !== undefined) return
  // Each expression becomes a recording rule; `promtool check rules` parses it.
  const rules = exprs.map(({ expr }, i) => ({
    record: `dashboard:query_${i}`,
    expr: expr.replace(/\$__rate_interval|\$__interval|\$__range/g, '5m').replace(/\$\{?\w+\}?/g, '.*')
  }))
  const dir = mkdtempSync(join(tmpdir(), 'wegate-grafana-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(join(dir, 'queries.yml'), stringify({ groups: [{ name: 'dashboard', rules }] }))
  const r = spawnSync('promtool', ['check', 'rules', 'queries.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 0, `${r.stdout}${r.stderr}`)
  t.match(r.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`))
})
