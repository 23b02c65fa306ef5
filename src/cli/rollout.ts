/**
 * `wegate rollout status|pause|resume|promote|abort [route]`: the automatic
 * ramps, through the admin API of a running gateway (GET /rollouts,
 * POST /rollouts/<route>/<command>). The admin address and token come from the
 * config (admin.host/port, admin.apiToken) unless --admin / $WEGATE_ADMIN_TOKEN say otherwise.
 */
import { loadConfigFile } from '../config/load.js'
import type { RolloutStatus } from '../proxy/rollout.js'

export interface RolloutCliOptions {
  action: string
  route: string | undefined
  file: string
  admin: string | undefined
  out: (text: string) => void
  err: (text: string) => void
}

const ACTIONS = ['status', 'pause', 'resume', 'promote', 'abort']

export async function rolloutCli (o: RolloutCliOptions): Promise<number> {
  if (!ACTIONS.includes(o.action)) {
    o.err(`wegate rollout: unknown action '${o.action}' (status, pause, resume, promote, abort)\n`)
    return 2
  }
  if (o.action !== 'status' && o.route === undefined) {
    o.err(`wegate rollout ${o.action}: which route? wegate rollout ${o.action} <route>\n`)
    return 2
  }
  let base = o.admin
  let token = process.env.WEGATE_ADMIN_TOKEN
  if (base === undefined || token === undefined) {
    const { config } = await loadConfigFile(o.file)
    const host = config.admin.host === '0.0.0.0' || config.admin.host === '::' ? '127.0.0.1' : config.admin.host
    base ??= `http://${host.includes(':') ? `[${host}]` : host}:${config.admin.port}`
    token ??= config.admin.apiToken
  }
  if (token === undefined) {
    o.err('wegate rollout: no admin token (set admin.apiToken in the config, or $WEGATE_ADMIN_TOKEN)\n')
    return 1
  }
  const url = o.action === 'status'
    ? `${base.replace(/\/$/, '')}/rollouts`
    : `${base.replace(/\/$/, '')}/rollouts/${encodeURIComponent(o.route!)}/${o.action}`
  const res = await fetch(url, { method: o.action === 'status' ? 'GET' : 'POST', headers: { authorization: `Bearer ${token}` } })
  const body = await res.json() as { code: number, message: string, data: unknown }
  if (body.code !== 200) {
    const reason = (body.data as { reason?: string } | null)?.reason
    o.err(`wegate rollout ${o.action}: ${body.message}${reason === undefined ? '' : `: ${reason}`} (${body.code})\n`)
    return 1
  }
  const rows = o.action === 'status' ? (body.data as { rollouts: RolloutStatus[] }).rollouts : [body.data as RolloutStatus]
  o.out(statusTable(rows.filter((r) => o.route === undefined || r.route === o.route)))
  return 0
}

const ms = (v: number | undefined): string => (v === undefined ? '-' : `${Math.round(v)}ms`)
const pct = (v: number): string => `${Math.round(v * 10_000) / 100}%`

function duration (msIn: number): string {
  const s = Math.max(0, Math.floor(msIn / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`
}

/** The status as a table: route, step, share, requests, error rate, p99 canary vs stable, time in step, state. */
export function statusTable (rows: readonly RolloutStatus[]): string {
  const head = ['ROUTE', 'STEP', 'SHARE', 'REQUESTS', 'ERRORS', 'P99 CANARY/STABLE', 'IN STEP', 'STATE']
  const lines = rows.map((r) => [
    r.route,
    `${r.step}/${r.steps}`,
    `${r.share}%`,
    `${r.analysis.canary.requests}/${r.analysis.stable.requests}`,
    pct(r.analysis.canary.errorRate),
    `${ms(r.analysis.canary.p99)}/${ms(r.analysis.stable.p99)}`,
    duration(r.inStep),
    r.state + (r.current ? '' : ' (other config)')
  ])
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)))
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ')
  const reasons = rows.map((r) => `${r.route}: ${r.reason}`)
  return [fmt(head), ...lines.map(fmt), '', ...reasons, ''].join('\n')
}
