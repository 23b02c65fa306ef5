/**
 * The whole of gateway.yaml as one TypeBox schema: it validates the file, fills
 * defaults, turns durations and sizes into numbers (Transform types, decoded
 * once at load) and is the TypeScript type of the loaded config. It is exported
 * as config/gateway.schema.json for editors (`npm run schema`).
 */
import { Type, type StaticDecode, type TSchema } from '@sinclair/typebox'
import { BYTES_PATTERN, DURATION_PATTERN, parseBytes, parseDuration } from './units.js'

/** A duration string (`800ms`, `30s`, `15m`, `7d`) decoded to milliseconds. */
const Duration = (def: string, description: string) =>
  Type.Transform(Type.String({ pattern: DURATION_PATTERN, default: def, description, examples: [def] }))
    .Decode((v) => parseDuration(v))
    .Encode((ms) => `${ms}ms`)

/** A size string (`16kb`, `1mb`) decoded to bytes. */
const Bytes = (def: string, description: string) =>
  Type.Transform(Type.String({ pattern: BYTES_PATTERN, default: def, description, examples: [def] }))
    .Decode((v) => parseBytes(v))
    .Encode((n) => `${n}b`)

const Strict = <T extends Parameters<typeof Type.Object>[0]>(props: T, description: string, withDefault = true) =>
  Type.Object(props, { additionalProperties: false, description, ...(withDefault ? { default: {} } : {}) })

const Port = (def: number) => Type.Integer({ minimum: 0, maximum: 65535, default: def })
const Name = (description: string) => Type.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$', description })

const Listen = (port: number, description: string) => Strict({
  host: Type.String({ default: '0.0.0.0', minLength: 1, description: 'Interface to bind' }),
  port: Port(port)
}, description)

const RateLimitRule = (max: number, window: string, by: 'ip' | 'openid', description: string, withDefault: boolean) => Strict({
  max: Type.Integer({ minimum: 1, default: max, description: 'Requests allowed per window' }),
  window: Duration(window, 'Length of the fixed window'),
  by: Type.Union([Type.Literal('ip'), Type.Literal('openid')], { default: by, description: 'What a counter is kept per: the client IP (per trustProxy) or the caller\'s openid (anonymous callers fall back to ip)' })
}, description, withDefault)

const Upstream = Strict({
  name: Name('Upstream version name, unique within the route (e.g. stable, canary)'),
  url: Type.String({ pattern: '^https?://[^\\s]+$', description: 'Base URL; its path, if any, is prefixed to the forwarded path' }),
  weight: Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'Share of traffic is weight / sum of weights' })
}, 'One upstream version', false)

const Canary = Strict({
  sticky: Type.Union([Type.Literal('none'), Type.Literal('openid'), Type.Literal('ip')], { default: 'openid', description: 'Keep the same caller on the same upstream' }),
  header: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9-]+$', description: 'Request header whose value names an upstream to force (testers)' })),
  upstream: Type.Optional(Name('The canary upstream for `openids` (default: the ramp\'s, else the rollback upstream, else the last upstream)')),
  openids: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'Callers always routed to the canary upstream' }),
  rollback: Type.Optional(Strict({
    upstream: Name('The upstream watched and rolled back'),
    errorRate: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.01, description: 'Roll back when errors / requests exceeds this' }),
    window: Duration('1m', 'Sliding window the rate is computed over'),
    minRequests: Type.Integer({ minimum: 1, default: 100, description: 'No decision below this many requests in the window' })
  }, 'Automatic rollback of a failing canary', false)),
  ramp: Type.Optional(Strict({
    upstream: Name('The canary upstream whose share of traffic the ramp raises'),
    steps: Type.Array(Type.Number({ exclusiveMinimum: 0, maximum: 100 }), { minItems: 1, default: [5, 20, 50, 100], description: 'The canary\'s share of traffic (percent) at each step, increasing; passing the last step promotes the canary (it keeps that share until the config changes)' }),
    interval: Duration('10m', 'Shortest time a step lasts; it advances only when its analysis passes'),
    minRequests: Type.Integer({ minimum: 1, default: 100, description: 'Canary requests (from all instances) a step needs before it is judged' }),
    errorRate: Type.Number({ minimum: 0, maximum: 1, default: 0.01, description: 'Abort (roll back) when the canary\'s errors / requests in the step exceeds this' }),
    maxLatencyRatio: Type.Number({ exclusiveMinimum: 0, default: 1.5, description: 'Abort when the canary\'s p99 exceeds this × the stable upstreams\' p99 over the same step' })
  }, 'Automatic progressive delivery: the canary\'s share goes through `steps`, each judged on the gateway\'s own measurements', false))
}, 'Grey release settings', false)

/** Request headers the client libraries send: pages may send them cross-origin without listing anything. */
export const CORS_DEFAULT_HEADERS = ['Authorization', 'Content-Type', 'X-Request-Id', 'traceparent', 'tracestate']
/** Response headers a page may read: the request id, rate-limit state and Retry-After. */
export const CORS_DEFAULT_EXPOSE = ['X-Request-Id', 'Retry-After', 'RateLimit-Limit', 'RateLimit-Remaining', 'RateLimit-Reset']
const HeaderName = Type.String({ pattern: '^[A-Za-z0-9!#$%&\'*+.^_`|~-]+$' })

const Cors = (description: string) => Strict({
  origins: Type.Array(Type.String({ pattern: '^(\\*|https?://\\S+)$' }), { minItems: 1, description: 'Origins whose pages may call the gateway, exactly as browsers send them (scheme://host[:port], lower case, no path or trailing /, e.g. https://h5.example.com); `*` for any origin, only without credentials. A request from any other origin gets no CORS headers' }),
  credentials: Type.Boolean({ default: false, description: 'Access-Control-Allow-Credentials: true — pages may send cookies (the browser-login cookie to /auth/login) with fetch(…, {credentials: \'include\'}); never with `*`' }),
  methods: Type.Array(Type.String({ pattern: '^[A-Z]+$' }), { default: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], description: 'Access-Control-Allow-Methods of a preflight' }),
  headers: Type.Array(HeaderName, { default: CORS_DEFAULT_HEADERS, description: 'Access-Control-Allow-Headers of a preflight: request headers a page may send' }),
  exposeHeaders: Type.Array(HeaderName, { default: CORS_DEFAULT_EXPOSE, description: 'Access-Control-Expose-Headers: response headers a page may read' }),
  maxAge: Duration('10m', 'Access-Control-Max-Age: how long a browser may reuse a preflight (browsers cap it: Chromium at 2h)')
}, description, false)

const Route = Strict({
  name: Name('Route name; used in logs and metric labels'),
  prefix: Type.String({ pattern: '^/', description: 'Path prefix, matched on segment boundaries; the longest prefix wins' }),
  auth: Type.Union([Type.Literal('required'), Type.Literal('optional'), Type.Literal('public')], { default: 'required', description: 'required: valid access token needed; optional: verified when present; public: none needed' }),
  timeout: Duration('30s', 'Upstream response timeout: the longest wait for a pooled connection, then for the response headers once the request is on one (a slow client upload does not count against it)'),
  bodyLimit: Bytes('1mb', 'Largest request body accepted (413 beyond)'),
  stripPrefix: Type.Boolean({ default: false, description: 'Remove the prefix before forwarding' }),
  forwardAuthorization: Type.Boolean({ default: false, description: 'Forward the client\'s Authorization header upstream (off: identity travels only in X-OpenID/X-UnionID/X-AppID)' }),
  injectPhone: Type.Boolean({ default: false, description: 'Send X-Phone-Number (plus sign, country code, number: +8613800138000) upstream for callers whose number was verified with POST /auth/phone (a client-sent X-Phone-Number is always removed)' }),
  rateLimit: Type.Optional(RateLimitRule(600, '1m', 'openid', 'Per-route rate limit', false)),
  websocket: Strict({
    idleTimeout: Duration('60s', 'Close a tunnel with no frame either way for this long (close code 1001); 0s: never')
  }, 'WebSocket tunnels opened on this route'),
  upstreams: Type.Array(Upstream, { minItems: 1, description: 'Weighted upstream versions (grey release)' }),
  canary: Type.Optional(Canary),
  cors: Type.Optional(Type.Union([
    Cors('This route\'s CORS policy, in place of the top-level `cors` (same fields)'),
    Type.Literal(false)
  ], { description: 'CORS for this route: a policy with the fields of the top-level `cors`, replacing it; false: none (preflights are forwarded, the upstream\'s CORS headers pass); unset: the top-level `cors`' }))
}, 'A route', false)

const KeyEntry = Strict({
  kid: Name('Key id, written to the token header'),
  secret: Type.Optional(Type.String({ minLength: 32, description: 'HS256 shared secret (>= 32 characters); the repository\'s public demo secret is refused except by serve --demo' })),
  privateKeyFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM private key (RS256/ES256/EdDSA); needed on the signing (first) key. Watched: replacing the file (e.g. a Secret update) reloads' })),
  publicKeyFile: Type.Optional(Type.String({ minLength: 1, description: 'PEM public key (RS256/ES256/EdDSA); derived from the private key when omitted. Watched like privateKeyFile' }))
}, 'A signing / verification key', false)

/** Where a redis store connects when the config names no topology. */
/** The WeChat channels an app can be (docs/channels.md). */
export const APP_TYPES = ['miniprogram', 'officialAccount', 'website', 'mobileApp'] as const
export type AppType = typeof APP_TYPES[number]
/** The app types whose login is a browser redirect through /auth/wechat/authorize. */
export const REDIRECT_APP_TYPES: readonly AppType[] = ['officialAccount', 'website']

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379'

/** host:port of a Redis node or sentinel ([v6 address]:port for IPv6). */
const NodeAddress = (description: string) =>
  Type.String({ pattern: '^(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9_.-]+):[0-9]{1,5}$', description })

/** Credentials and TLS of the data nodes; the same for every node of a topology. */
const RedisAuth = (who: string, tlsAlso = '') => ({
  username: Type.Optional(Type.String({ minLength: 1, description: `ACL user of ${who} (Redis 6+; default: the default user)` })),
  password: Type.Optional(Type.String({ minLength: 1, description: `Password of ${who} (use \${VAR})` })),
  tls: Type.Boolean({ default: false, description: `TLS to ${who}${tlsAlso} (trusted CAs: the system's, or NODE_EXTRA_CA_CERTS)` })
})

/** TLS on the public listener: PEM files, watched and reloaded like the token key files. */
const ListenTls = Strict({
  certFile: Type.String({ minLength: 1, description: 'PEM certificate, followed by its intermediate CA certificates (the chain clients need), e.g. a Kubernetes Secret\'s tls.crt; relative to the working directory' }),
  keyFile: Type.String({ minLength: 1, description: 'PEM private key of certFile (e.g. tls.key); relative to the working directory' }),
  hsts: Type.Optional(Strict({
    maxAge: Duration('180d', 'max-age: how long browsers go straight to https for this host (and refuse certificate errors). Start short (5m) and raise it once every page works over https; 0s tells browsers to forget it'),
    includeSubDomains: Type.Boolean({ default: false, description: 'includeSubDomains: every subdomain of this host too — only when all of them serve https' })
  }, 'Strict-Transport-Security on every response over TLS (unset: none; an upstream\'s own passes then). Reloadable', false))
}, 'Serve HTTPS on the public listener: TLS 1.2+ (ECDHE with AEAD ciphers on 1.2), HTTP/2 by ALPN (h2, falling back to http/1.1; WebSocket stays on HTTP/1.1). The files are watched: a replaced certificate/key pair is applied to new connections without dropping open ones; a pair that does not match is refused and the last good one kept. Turning TLS on or off, or changing the port, takes a restart', false)

export const GatewayConfigSchema = Type.Object({
  $schema: Type.Optional(Type.String()),
  listen: Strict({
    ...Listen(8080, '').properties,
    tls: Type.Optional(ListenTls)
  }, 'Public listener'),
  admin: Strict({
    ...Listen(9091, '').properties,
    apiToken: Type.Optional(Type.String({ minLength: 32, description: 'Bearer token backends send to the admin port\'s /wechat/access-token endpoints (>= 32 characters, use ${VAR}); unset: those endpoints answer 404' }))
  }, 'Admin listener: /metrics /healthz /readyz and the WeChat access_token for backends (never on the public port)'),
  workers: Type.Union([
    Type.Integer({ minimum: 1, maximum: 64 }),
    Type.Literal('auto')
  ], { default: 1, description: 'Gateway processes sharing the public port (node:cluster): 1, a number, or auto (one per available CPU). More than 1 needs store.type redis; the admin port then serves metrics summed over every worker' }),
  trustProxy: Type.Union([
    Type.Boolean(),
    Type.Array(Type.String({ minLength: 1 }), { description: 'CIDRs / addresses of trusted load balancers' })
  ], { default: false, description: 'Whose X-Forwarded-* headers to believe: false (nobody), true (everybody: only behind a proxy that overwrites them), or a list of CIDRs' }),
  publicUrl: Type.Optional(Type.String({ pattern: '^https?://[^\\s]+$', description: 'The gateway\'s external base URL as browsers reach it (e.g. https://api.example.com): WeChat sends them back to {publicUrl}/auth/wechat/callback. Required by officialAccount and website apps' })),
  store: Strict({
    type: Type.Union([Type.Literal('memory'), Type.Literal('redis')], { default: 'memory', description: 'memory: one instance only; redis: shared by every instance' }),
    url: Type.Optional(Type.String({ minLength: 1, description: `Single Redis server (or a managed endpoint): redis://[user:password@]host:port[/db], rediss:// for TLS. Set at most one of url, cluster, sentinel; with none, ${DEFAULT_REDIS_URL}` })),
    cluster: Type.Optional(Strict({
      nodes: Type.Array(NodeAddress('A seed node of the cluster'), { minItems: 1, description: 'Some nodes of the cluster (host:port); the others are discovered from them' }),
      ...RedisAuth('every node')
    }, 'Redis Cluster: keys are spread over the masters by hash slot', false)),
    sentinel: Type.Optional(Strict({
      name: Type.String({ minLength: 1, description: 'Name of the monitored master group (`sentinel monitor <name> …`)' }),
      nodes: Type.Array(NodeAddress('A sentinel (host:port, usually port 26379)'), { minItems: 1, description: 'Sentinels to ask where the master is; list several' }),
      ...RedisAuth('the master', ' and to the sentinels'),
      sentinelPassword: Type.Optional(Type.String({ minLength: 1, description: 'The sentinels\' own password, when they have one (use ${VAR})' }))
    }, 'Redis Sentinel: the gateway asks the sentinels for the current master and follows failovers', false)),
    keyPrefix: Type.String({ default: 'wegate:', pattern: '^[A-Za-z0-9:_.-]*$', description: 'Namespace for every key (no braces: the keys carry their own {hash tags} for Redis Cluster)' }),
    failMode: Type.Union([Type.Literal('closed'), Type.Literal('open')], { default: 'closed', description: 'When the store is unreachable: closed rejects authenticated requests (503), open lets verified tokens through' }),
    maxEntries: Type.Integer({ minimum: 100, default: 100_000, description: 'memory store: bound on sessions, refresh families, browser-login states and login tickets each (oldest evicted); revocations are never evicted, they expire' })
  }, 'Shared state: sessions, refresh tokens, revocations, rate-limit counters'),
  wechat: Strict({
    baseUrl: Type.String({ pattern: '^https?://[^\\s]+$', default: 'https://api.weixin.qq.com', description: 'WeChat server API base URL' }),
    timeout: Duration('3s', 'Per-attempt timeout of a code2Session call'),
    retries: Type.Integer({ minimum: 0, maximum: 5, default: 2, description: 'Extra attempts for transient failures (errcode -1, reset, timeout)' }),
    decryptMaxAge: Duration('0s', 'POST /auth/decrypt refuses data whose watermark is older than this; 0s: no age check (data a mini program cached, e.g. wx.getWeRunData results, stays usable; the session_key and watermark appid still bind it to the user and app)'),
    openBaseUrl: Type.String({ pattern: '^https?://[^\\s]+$', default: 'https://open.weixin.qq.com', description: 'WeChat\'s authorization pages (officialAccount and website logins send browsers there)' }),
    apps: Type.Array(Strict({
      type: Type.Union(APP_TYPES.map((t) => Type.Literal(t)), { default: 'miniprogram', description: 'The channel: miniprogram (wx.login code), officialAccount (H5 inside WeChat, browser redirect), website (QR login, browser redirect), mobileApp (WeChat SDK code in a native App); see docs/channels.md' }),
      appId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'The app\'s AppID' }),
      secret: Type.String({ minLength: 1, description: 'The app\'s AppSecret (use ${VAR})' }),
      redirects: Type.Array(Type.String({ minLength: 1 }), { default: [], description: 'officialAccount and website apps (required there, refused elsewhere): URL prefixes a browser login may return to, e.g. https://h5.example.com/ (absolute http(s), a path or a trailing /, no wildcards); any other redirect is refused' }),
      loginBinding: Type.Optional(Type.Union([Type.Literal('cookie'), Type.Literal('codeChallenge')], { description: 'officialAccount and website apps: what binds a login\'s ticket to the browser that started it. cookie (default): the login cookie, sent with POST /auth/login (the page on the gateway\'s origin, or same site with credentials); codeChallenge: every login starts with a PKCE-style codeChallenge and the page sends its codeVerifier (a page on any origin). See docs/channels.md' }))
    }, 'A WeChat app', false), { minItems: 1, description: 'WeChat apps served: mini programs, official accounts, websites and mobile Apps' })
  }, 'WeChat server API', false),
  tokens: Strict({
    issuer: Type.String({ minLength: 1, default: 'wegate', description: 'iss claim' }),
    audience: Type.String({ minLength: 1, default: 'miniprogram', description: 'aud claim' }),
    algorithm: Type.Union([Type.Literal('HS256'), Type.Literal('RS256'), Type.Literal('ES256'), Type.Literal('EdDSA')], { default: 'HS256', description: 'Signing algorithm; the only one accepted on verification' }),
    keys: Type.Array(KeyEntry, { minItems: 1, description: 'The first key signs; every key verifies (rotation)' }),
    accessTtl: Duration('15m', 'Access token lifetime'),
    refreshTtl: Duration('7d', 'Refresh token lifetime (each token)'),
    sessionTtl: Duration('30d', 'Absolute lifetime of a login (refresh family)'),
    refreshGrace: Duration('10s', 'Window in which re-presenting the just-spent refresh token returns the same pair instead of counting as reuse'),
    sessionKeyTtl: Duration('3d', 'How long session_key is kept server-side'),
    clockSkew: Duration('30s', 'Tolerance on exp / nbf')
  }, 'Access and refresh tokens', false),
  rateLimits: Strict({
    login: RateLimitRule(5, '1m', 'ip', 'Limit on /auth/login (the seed: 5 per minute per IP)', true),
    phone: RateLimitRule(5, '1m', 'openid', 'Limit on /auth/phone per caller: each call spends a WeChat API call on the app\'s shared access_token quota', true),
    decrypt: RateLimitRule(30, '1m', 'openid', 'Limit on /auth/decrypt per caller', true),
    session: RateLimitRule(30, '1m', 'openid', 'Limit on /auth/session per caller: each call with a stored session_key spends a WeChat checksession call', true)
  }, 'Gateway-wide rate limits'),
  limits: Strict({
    headerSize: Bytes('16kb', 'Largest request header block (431 beyond)'),
    authBodyLimit: Bytes('16kb', 'Largest body on /auth/* (413 beyond)'),
    requestTimeout: Duration('30s', 'Time to receive a whole request (408 beyond)'),
    headersTimeout: Duration('10s', 'Time to receive request headers (408 beyond)'),
    keepAliveTimeout: Duration('75s', 'Idle client keep-alive; keep above your load balancer\'s idle timeout')
  }, 'Client-side limits'),
  websocket: Strict({
    maxTunnels: Type.Integer({ minimum: 1, default: 10_000, description: 'Open WebSocket tunnels on this instance, all routes together (two sockets each); past it a handshake gets 503' }),
    maxTunnelsPerCaller: Type.Integer({ minimum: 1, default: 20, description: 'Open tunnels per caller: per openid, or per client IP for anonymous callers; past it a handshake gets 429' })
  }, 'WebSocket tunnels (wx.connectSocket), gateway-wide'),
  shutdown: Strict({
    delay: Duration('0s', 'After SIGTERM, keep serving (not ready) this long so load balancers stop sending'),
    timeout: Duration('20s', 'Longest wait for in-flight requests before exiting')
  }, 'Graceful shutdown'),
  cors: Type.Optional(Cors('Cross-origin calls from browser pages (H5, website): the gateway answers preflights itself (204, never forwarded, no token needed, not rate limited) and adds the CORS headers to /auth/* and proxied responses, replacing an upstream\'s. Reloadable. Unset: no CORS headers; proxied preflights go to the upstreams. See docs/routing.md')),
  logging: Strict({
    level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info', description: 'pino log level' })
  }, 'Logging'),
  routes: Type.Array(Route, { default: [], description: 'Routes; everything except /auth/* and /.well-known/* goes through one' })
}, { additionalProperties: false, $id: 'https://wegate.dev/gateway.schema.json', title: 'wegate gateway.yaml' })

export type GatewayConfig = StaticDecode<typeof GatewayConfigSchema>
export type RouteConfig = GatewayConfig['routes'][number]
export type UpstreamConfig = RouteConfig['upstreams'][number]
export type CanaryConfig = NonNullable<RouteConfig['canary']>
export type RampConfig = NonNullable<CanaryConfig['ramp']>
export type RateLimitConfig = GatewayConfig['rateLimits']['login']
export type TokensConfig = GatewayConfig['tokens']
export type StoreConfig = GatewayConfig['store']
export type AppConfig = GatewayConfig['wechat']['apps'][number]
export type CorsConfig = NonNullable<GatewayConfig['cors']>

/** Helper for sub-schemas callers may want (e.g. tests). */
export type Schema = TSchema

/**
 * The schema as editors should see it: a key with a default is optional in the
 * file, even though the loaded config always has it.
 */
export function editorSchema (): unknown {
  const strip = (node: unknown): unknown => {
    if (Array.isArray(node)) return node.map(strip)
    if (typeof node !== 'object' || node === null) return node
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(node)) out[k] = strip(v)
    const props = out.properties as Record<string, { default?: unknown }> | undefined
    if (Array.isArray(out.required) && props !== undefined) {
      const required = (out.required as string[]).filter((k) => props[k]?.default === undefined)
      if (required.length > 0) out.required = required
      else delete out.required
    }
    return out
  }
  return strip(JSON.parse(JSON.stringify(GatewayConfigSchema)))
}

interface SchemaNode {
  type?: string
  description?: string
  default?: unknown
  properties?: Record<string, SchemaNode>
  items?: SchemaNode
  anyOf?: SchemaNode[]
  const?: unknown
  minimum?: number
  maximum?: number
  pattern?: string
}

/** docs/configuration.md: every field of gateway.yaml with its type, default and meaning. */
export function configReference (): string {
  const rows: string[] = []
  const typeOf = (n: SchemaNode): string => {
    if (n.anyOf !== undefined) {
      const consts = n.anyOf.map((o) => o.const).filter((c) => c !== undefined)
      return consts.length === n.anyOf.length ? consts.map((c) => `\`${String(c)}\``).join(' \\| ') : n.anyOf.map(typeOf).join(' \\| ')
    }
    if (n.type === 'array') return `list of ${n.items === undefined ? 'any' : typeOf(n.items)}`
    if (n.type === 'string' && n.pattern?.includes('(ms|s|m|h|d)') === true) return 'duration'
    if (n.type === 'string' && n.pattern?.includes('[kKmMgG]') === true) return 'size'
    if (n.type === 'object') return 'mapping'
    return n.type ?? 'any'
  }
  const walk = (n: SchemaNode, path: string) => {
    if (path !== '' && path !== '$schema') {
      const def = n.default === undefined || (typeof n.default === 'object' && n.default !== null && !Array.isArray(n.default)) ? '' : `\`${JSON.stringify(n.default)}\``
      const range = n.minimum !== undefined || n.maximum !== undefined ? ` (${n.minimum ?? ''}…${n.maximum ?? ''})` : ''
      rows.push(`| \`${path}\` | ${typeOf(n)}${range} | ${def} | ${(n.description ?? '').replace(/\|/g, '\\|')} |`)
    }
    const obj = n.type === 'array' ? n.items : n
    const suffix = n.type === 'array' ? '[]' : ''
    if (obj?.properties !== undefined) {
      for (const [k, child] of Object.entries(obj.properties)) {
        if (k === '$schema') continue
        walk(child, path === '' ? k : `${path}${suffix}.${k}`)
      }
    }
    for (const alt of n.anyOf ?? []) {
      if (alt.type === 'array' && alt.items?.properties !== undefined) walk(alt, path)
    }
  }
  walk(JSON.parse(JSON.stringify(GatewayConfigSchema)) as SchemaNode, '')
  return `# Configuration reference (\`gateway.yaml\`)

<!-- Generated from src/config/schema.ts by \`npm run schema\`; do not edit by hand. -->

wegate reads one YAML file: \`wegate serve -c gateway.yaml\` (default \`./gateway.yaml\`, or
\`$WEGATE_CONFIG\`). \`wegate check -c file\` validates it and lists every problem at once (schema,
\`\${VAR}\` and the rules between fields together), each with its path and line.

- **Environment**: \`\${VAR}\` is replaced by the variable (an unset one is an error),
  \`\${VAR:-default}\` falls back to \`default\`, and \`$\${\` writes a literal \`\${\`. Keep secrets
  (WeChat AppSecrets, JWT keys, Redis passwords) in the environment, never in the file.
- **Durations** are strings: \`800ms\`, \`30s\`, \`15m\`, \`2h\`, \`7d\`. **Sizes**: \`512b\`, \`16kb\`, \`1mb\`.
- **Unknown keys are errors** (a typo never silently falls back to a default); the closest known
  key is suggested (\`routes[0].timout: unknown key — did you mean timeout?\`).
- Editors: the file's first line \`# yaml-language-server: $schema=./config/gateway.schema.json\`
  gives completion and inline checks (VS Code with the YAML extension, JetBrains, Neovim).

| field | type | default | meaning |
|---|---|---|---|
${rows.join('\n')}
`
}
