/**
 * The rules of gateway.yaml that a schema cannot say: unique names, references
 * between fields, key material per algorithm, addresses, reserved prefixes.
 * They run once, on the decoded config, in the loader; whatever consumes a
 * loaded config (token keys, route table, stores) may rely on them.
 *
 * Each rule is small and reads only the fields it names, none of them a
 * duration or size: on a file that also has schema problems the loader runs
 * them on the value as far as it converted, so that every problem is reported
 * at once (see `runRules`).
 */
import { isIP } from 'node:net'
import type { ConfigProblem } from './errors.js'
import { isReservedPath, normalisePrefix } from './paths.js'
import { REDIRECT_APP_TYPES, type CorsConfig, type GatewayConfig, type RouteConfig } from './schema.js'

type Report = (path: string, message: string) => void
interface Rule {
  /** The fields the rule reads (`*` for any index): it is skipped when the schema reported one of them. */
  reads: readonly string[]
  check: (config: GatewayConfig, report: Report) => void
}
interface RouteRule {
  /** As Rule.reads, within the route. */
  reads: readonly string[]
  check: (route: RouteConfig, at: string, report: Report) => void
}

/** Report every repeat of a value after its first occurrence. */
function unique (values: readonly string[], path: (i: number) => string, what: string, report: Report): void {
  const seen = new Map<string, number>()
  values.forEach((v, i) => {
    const first = seen.get(v)
    if (first !== undefined) report(path(i), `duplicate ${what} '${v}' (also at index ${first})`)
    else seen.set(v, i)
  })
}

const RULES: readonly Rule[] = [{
  reads: ['cors'],
  check: ({ cors }, report) => corsProblems(cors, 'cors', report)
}, {
  // One Redis topology at most (none: the default single server)
  reads: ['store.type'],
  check: ({ store }, report) => {
    const topologies = (['url', 'cluster', 'sentinel'] as const).filter((k) => store[k] !== undefined)
    if (store.type === 'redis' && topologies.length > 1) {
      report('store', `set only one of url, cluster, sentinel (found ${topologies.join(' and ')})`)
    }
  }
}, {
  reads: ['store.type', 'store.cluster', 'store.sentinel'],
  check: ({ store }, report) => {
    for (const k of ['cluster', 'sentinel'] as const) {
      const t = store[k]
      if (t === undefined) continue
      if (store.type !== 'redis') report(`store.${k}`, 'needs store.type redis')
      t.nodes.forEach((node, i) => {
        const port = Number(node.slice(node.lastIndexOf(':') + 1))
        if (port < 1 || port > 65535) report(`store.${k}.nodes[${i}]`, 'port must be 1…65535')
      })
    }
  }
}, {
  // Sessions, revocations, rate-limit counters and rollbacks must be shared by every worker.
  reads: ['workers', 'store.type'],
  check: ({ workers, store }, report) => {
    if (workers !== 1 && store.type === 'memory') {
      report('workers', `${String(workers)} workers need store.type redis (the memory store is one process's)`)
    }
  }
}, {
  reads: ['trustProxy'],
  check: ({ trustProxy }, report) => {
    if (!Array.isArray(trustProxy)) return
    trustProxy.forEach((entry, i) => {
      const [addr, bits, extra] = entry.split('/')
      const max = isIP(addr) === 6 ? 128 : 32
      if (isIP(addr) === 0 || extra !== undefined || (bits !== undefined && !(/^\d+$/.test(bits) && Number(bits) <= max))) {
        report(`trustProxy[${i}]`, `'${entry}' is not an IP address or CIDR`)
      }
    })
  }
}, {
  reads: ['wechat.apps[*].appId'],
  check: ({ wechat }, report) => unique(wechat.apps.map((a) => a.appId), (i) => `wechat.apps[${i}].appId`, 'appId', report)
}, {
  // Browser logins: WeChat sends the browser back to {publicUrl}/auth/wechat/callback.
  reads: ['publicUrl', 'wechat.apps[*].type'],
  check: ({ publicUrl, wechat }, report) => {
    const i = wechat.apps.findIndex((a) => REDIRECT_APP_TYPES.includes(a.type))
    if (publicUrl === undefined && i !== -1) {
      report('publicUrl', `is required by wechat.apps[${i}] (type ${wechat.apps[i].type}): WeChat sends browsers back to {publicUrl}/auth/wechat/callback`)
    }
    if (publicUrl === undefined) return
    urlProblems(publicUrl).forEach((m) => report('publicUrl', m))
    // The browser login's cookie is Secure: browsers keep it over https, and over http for this machine only.
    if (/^http:\/\//i.test(publicUrl) && !/^http:\/\/(localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\])(:\d+)?(\/|$)/i.test(publicUrl)) {
      report('publicUrl', 'must be https:// (browsers drop the Secure login cookie over http, except for localhost / 127.0.0.1)')
    }
  }
}, {
  reads: ['wechat.apps[*].type', 'wechat.apps[*].redirects', 'wechat.apps[*].loginBinding'],
  check: ({ wechat }, report) => wechat.apps.forEach((a, i) => {
    const at = `wechat.apps[${i}].redirects`
    if (!REDIRECT_APP_TYPES.includes(a.type)) {
      if (a.redirects.length > 0) report(at, `only officialAccount and website apps redirect (this app is ${a.type})`)
      if (a.loginBinding !== undefined) report(`wechat.apps[${i}].loginBinding`, `only officialAccount and website apps have browser logins (this app is ${a.type})`)
      return
    }
    if (a.redirects.length === 0) report(at, `is required with type ${a.type}: the URL prefixes a login may return to, e.g. https://h5.example.com/`)
    a.redirects.forEach((r, j) => redirectProblems(r).forEach((m) => report(`${at}[${j}]`, m)))
  })
}, {
  reads: ['tokens.keys[*].kid'],
  check: ({ tokens }, report) => unique(tokens.keys.map((k) => k.kid), (i) => `tokens.keys[${i}].kid`, 'kid', report)
}, {
  // HS256 keys are secrets; the others are PEM files, and the first key signs.
  reads: ['tokens.algorithm', 'tokens.keys'],
  check: ({ tokens }, report) => {
    tokens.keys.forEach((k, i) => {
      if (tokens.algorithm === 'HS256') {
        if (k.secret === undefined) report(`tokens.keys[${i}].secret`, 'is required with algorithm HS256')
      } else if (k.privateKeyFile === undefined && k.publicKeyFile === undefined) {
        report(`tokens.keys[${i}]`, `needs privateKeyFile or publicKeyFile with algorithm ${tokens.algorithm}`)
      } else if (i === 0 && k.privateKeyFile === undefined) {
        report('tokens.keys[0].privateKeyFile', 'is required: the first key signs')
      }
    })
  }
}, {
  reads: ['routes[*].name'],
  check: ({ routes }, report) => unique(routes.map((r) => r.name), (i) => `routes[${i}].name`, 'route name', report)
}, {
  reads: ['routes[*].prefix'],
  check: ({ routes }, report) => unique(routes.map((r) => normalisePrefix(r.prefix)), (i) => `routes[${i}].prefix`, 'prefix', report)
}]

/** What a CORS policy needs beyond the schema: origins as browsers send them, no `*` with credentials. */
function corsProblems (cors: CorsConfig | false | undefined, at: string, report: Report): void {
  if (cors === undefined || cors === false) return
  cors.origins.forEach((o, i) => {
    if (o === '*') {
      if (cors.credentials) report(`${at}.origins[${i}]`, '`*` cannot go with credentials: true (browsers refuse it): list the origins')
      return
    }
    let origin: string | undefined
    try { origin = new URL(o).origin } catch {}
    if (origin !== o) report(`${at}.origins[${i}]`, `must be an origin exactly as browsers send it${origin === undefined || origin === 'null' ? '' : ` ('${origin}')`}: scheme://host[:port], lower case, no path or trailing /`)
  })
  unique(cors.origins, (i) => `${at}.origins[${i}]`, 'origin', report)
}

const ROUTE_RULES: readonly RouteRule[] = [{
  reads: ['cors'],
  check: (r, at, report) => corsProblems(r.cors, `${at}.cors`, report)
}, {
  reads: ['prefix'],
  check: (r, at, report) => {
    if (isReservedPath(normalisePrefix(r.prefix))) report(`${at}.prefix`, `'${r.prefix}' is reserved by the gateway`)
    if (/\/\/|\/\.\.?(\/|$)|[%;?#\\]/.test(r.prefix)) {
      report(`${at}.prefix`, 'must be a plain normalised path (no //, . or .. segments, %, ;, ?, #, \\)')
    }
  }
}, {
  reads: ['upstreams[*].name'],
  check: (r, at, report) => unique(r.upstreams.map((u) => u.name), (j) => `${at}.upstreams[${j}].name`, 'upstream name', report)
}, {
  reads: ['upstreams[*].weight'],
  check: (r, at, report) => {
    if (r.upstreams.every((u) => u.weight === 0)) report(`${at}.upstreams`, 'at least one upstream needs a weight > 0')
  }
}, {
  // What the route table needs of an upstream URL (the schema checks only the scheme).
  reads: ['upstreams[*].url'],
  check: (r, at, report) => r.upstreams.forEach((u, j) => {
    const where = `${at}.upstreams[${j}].url`
    let url: URL
    try {
      url = new URL(u.url)
    } catch {
      return report(where, 'is not a valid URL')
    }
    if (url.search !== '' || url.hash !== '' || /[?#]/.test(u.url)) report(where, 'must not have a query or fragment')
    if (url.username !== '' || url.password !== '') report(where, 'must not carry credentials')
    if (url.pathname.includes('//')) report(where, 'path must not contain //')
  })
}, {
  reads: ['name', 'upstreams[*].name', 'canary.upstream', 'canary.rollback.upstream'],
  check: (r, at, report) => {
    const names = new Set(r.upstreams.map((u) => u.name))
    const ref = (name: string | undefined, path: string) => {
      if (name !== undefined && !names.has(name)) report(path, `names no upstream of route '${r.name}'`)
    }
    ref(r.canary?.upstream, `${at}.canary.upstream`)
    ref(r.canary?.rollback?.upstream, `${at}.canary.rollback.upstream`)
    ref(r.canary?.ramp?.upstream, `${at}.canary.ramp.upstream`)
  }
}, {
  reads: ['upstreams[*].name', 'upstreams[*].weight', 'canary.upstream', 'canary.rollback.upstream', 'canary.ramp'],
  check: (r, at, report) => {
    const ramp = r.canary?.ramp
    if (ramp === undefined) return
    const where = `${at}.canary.ramp`
    ramp.steps.forEach((s, j) => {
      if (j > 0 && !(s > ramp.steps[j - 1])) report(`${where}.steps[${j}]`, `must be greater than the step before it (${ramp.steps[j - 1]})`)
    })
    if (r.upstreams.length < 2) report(`${where}`, 'needs a stable upstream besides the canary (the route has one upstream)')
    else if (!r.upstreams.some((u) => u.name !== ramp.upstream && u.weight > 0)) report(`${at}.upstreams`, `a ramp needs an upstream other than '${ramp.upstream}' with a weight > 0 (the stable version)`)
    // The picker's canary range (sticky callers) and the ramp's share must be the same upstream.
    if (r.canary?.upstream !== undefined && r.canary.upstream !== ramp.upstream) report(`${at}.canary.upstream`, `must be the ramp's upstream '${ramp.upstream}' (or be left out)`)
    if (r.canary?.rollback !== undefined && r.canary.rollback.upstream !== ramp.upstream) report(`${at}.canary.rollback.upstream`, `must be the ramp's upstream '${ramp.upstream}'`)
  }
}]

/** What a base URL (publicUrl, a redirect prefix) must not have. */
function urlProblems (raw: string): string[] {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return ['is not a valid URL']
  }
  const out: string[] = []
  if (url.search !== '' || url.hash !== '' || /[?#]/.test(raw)) out.push('must not have a query or fragment')
  if (url.username !== '' || url.password !== '') out.push('must not carry credentials')
  return out
}

/**
 * A redirect prefix is matched as a string: without a path, `https://h5.example.com`
 * would also match `https://h5.example.com.evil.net/`; a wildcard would be a pattern.
 */
function redirectProblems (raw: string): string[] {
  if (raw.includes('*')) return ['no wildcards: list each URL prefix']
  if (!/^https?:\/\/[^/?#\s]+\/\S*$/i.test(raw)) {
    return [`'${raw}' must be an absolute http(s) URL with a path or a trailing / (e.g. https://h5.example.com/)`]
  }
  return urlProblems(raw)
}

/**
 * Every rule problem of a decoded config, with its path. `reported`: paths the
 * schema already found malformed (the value then failed the schema and is used as
 * far as it converted): a rule reading one of them is skipped, and a rule that
 * still meets a malformed part reports nothing rather than throw.
 */
export function checkRules (config: GatewayConfig, reported: readonly string[] = []): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const report: Report = (path, message) => { problems.push({ path, message }) }
  const bad = reported.map(segments)
  const readable = (reads: readonly string[], at: string): boolean =>
    !reads.some((r) => bad.some((b) => overlaps(b, segments(at === '' ? r : `${at}.${r}`))))
  const run = (fn: () => void): void => {
    if (bad.length === 0) return fn()
    try {
      fn()
    } catch {
      // a part the schema already reported as malformed
    }
  }
  for (const rule of RULES) if (readable(rule.reads, '')) run(() => rule.check(config, report))
  run(() => config.routes.forEach((route, i) => {
    const at = `routes[${i}]`
    for (const rule of ROUTE_RULES) if (readable(rule.reads, at)) run(() => rule.check(route, at, report))
  }))
  return problems
}

/** `routes[1].upstreams[*].url` → ['routes', '1', 'upstreams', '*', 'url']. */
export function segments (path: string): string[] {
  return [...path.matchAll(/([^.[\]]+)|\[(\d+|\*)\]/g)].map((m) => m[2] ?? m[1])
}

/** Is one path inside the other (or the same)? `*` matches any index. */
function overlaps (a: readonly string[], b: readonly string[]): boolean {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i] && a[i] !== '*' && b[i] !== '*') return false
  return true
}
