/**
 * The OpenAPI 3.1 description of the gateway's own API, generated from the
 * schemas its routes are registered with. @fastify/swagger is registered on the
 * public and on the admin instance before their routes: it keeps every route it
 * is told about (an `onRoute` hook, at start) and reads them when asked (after
 * `ready`); it adds no hook to the request path. Only routes with `tags` are
 * described: the proxy's catch-all and the 405 answers are not API.
 *
 * (http/schemas.ts describeRoutes registers it.)
 *
 * One document for both listeners: the public paths use the document's
 * `servers` (the public port), the admin paths carry their own `servers` (the
 * admin port) and `Admin: …` tags. `npm run openapi` writes it to
 * docs/openapi.json; the admin port serves it as GET /openapi.json, built on the
 * first request and kept (routes and listeners only change with a restart).
 */
import { readFileSync } from 'node:fs'
import type { FastifyInstance } from 'fastify'
import { TAG_BROWSER, TAG_LOGIN } from '../auth/schemas.js'
import type { GatewayConfig } from '../config/schema.js'
import { SECURITY_SCHEMES, errorCodeSchema, errorResponses, type JsonSchema } from '../http/schemas.js'
import { TAG_ACCESS_TOKEN } from '../wechat/admin-routes.js'
import { TAG_WECHAT } from '../wechat/routes.js'
import { TAG_ADMIN } from './admin.js'
import { TAG_ROLLOUTS } from './rollouts.js'

const TAG_PROXIED = 'Proxied routes'

export interface OpenApiServers {
  /** Base URL of the public listener (the API's clients). */
  public: string
  /** Base URL of the admin listener (private: backends, SREs, Prometheus). */
  admin: string
}

/** Where the listeners are reached, from the config: publicUrl, else the listen port on loopback. */
export function serversOf (config: GatewayConfig): OpenApiServers {
  const host = (h: string) => h === '0.0.0.0' || h === '::' || h === '' ? '127.0.0.1' : h.includes(':') ? `[${h}]` : h
  return {
    public: (config.publicUrl ?? `http://${host(config.listen.host)}:${config.listen.port}`).replace(/\/+$/, ''),
    admin: `http://${host(config.admin.host)}:${config.admin.port}`
  }
}

const version = (): string => (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

const DESCRIPTION = `The API of wegate's own endpoints: login and tokens on the **public port**, operations on the **admin port**
(its paths carry their own \`servers\`; tags starting with "Admin:"). Generated from the route schemas
(\`npm run openapi\`); the running gateway serves it on the admin port as \`GET /openapi.json\`.

**Envelope.** Every answer the gateway produces itself is \`{"code": <int>, "message": <string>, "data": <object|null>}\`
with \`code: 200\` on success (the JWKS, /healthz, /readyz and /metrics excepted: they follow their own formats).
An error's \`code\` is one of the \`ErrorCode\` schema (docs/errors.md says what the client should do); the HTTP
status always matches it. A 5xx carries the request's W3C trace id in \`data.traceId\`. Every answer has an
\`X-Request-Id\` header.

**Proxied routes.** Every other path on the public port is forwarded to the upstream of the route it matches
(\`routes:\` in gateway.yaml) and answered by that upstream, untouched: those APIs are the backends' own and are
not described here. The identity headers contract is in the "${TAG_PROXIED}" tag.`

const PROXIED = `Requests to a route with \`auth: required\` need \`Authorization: Bearer <accessToken>\` (\`auth: optional\`: used when
valid). Before forwarding, the gateway removes every client-sent copy of these headers (any case, any count) and sets them
from the verified token, so an upstream can trust them (the \`X-WX-*\` identity set of WeChat Cloud hosting is removed too):

| header | value |
|---|---|
| \`X-OpenID\` | the caller's openid |
| \`X-UnionID\` | the caller's unionid, when WeChat gave one |
| \`X-AppID\` | the app the token was issued for |
| \`X-WeGate-Channel\` | how the user logged in: the app's type (\`miniprogram\`, \`officialAccount\`, \`website\`, \`mobileApp\`) |
| \`X-Phone-Number\` | on routes with \`injectPhone: true\`: \`+<countryCode><purePhoneNumber>\` verified by POST /auth/phone |

The gateway also sets \`X-Request-Id\` and \`traceparent\` (W3C trace context). A request without a valid token on a
required route gets the 2xxxx envelope; a missing route 30004; an unreachable or slow upstream 50020/50021
(docs/routing.md).`

const TAGS = [
  { name: TAG_LOGIN, description: 'wx.login → POST /auth/login → the token pair; refresh with rotation; logout; the JWKS. Public port. docs/auth.md, docs/tokens.md' },
  { name: TAG_WECHAT, description: 'The credential hub: WeChat APIs that need the user\'s session_key or the app\'s access_token. Public port, the caller\'s access token. docs/wechat-services.md' },
  { name: TAG_BROWSER, description: 'WeChat logins in a browser: official accounts (H5 in WeChat) and websites (QR code). Public port. docs/channels.md' },
  { name: TAG_PROXIED, description: PROXIED },
  { name: TAG_ADMIN, description: 'Admin port (private: never expose it). Probes and metrics need no token. docs/operations.md' },
  { name: TAG_ACCESS_TOKEN, description: 'Admin port: the apps\' shared access_token for backends, behind `admin.apiToken`. docs/wechat-services.md' },
  { name: TAG_ROLLOUTS, description: 'Admin port: automatic canary ramps (`canary.ramp`), behind `admin.apiToken`; `wegate rollout`. docs/operations.md' }
]

interface Described {
  paths?: Record<string, Record<string, unknown>>
  components?: { schemas?: Record<string, unknown> }
}

/**
 * @fastify/swagger marks every body required; a body schema that admits null
 * (POST /auth/logout) is one the client may leave out.
 */
function optionalBodies (item: Record<string, unknown>): void {
  for (const op of Object.values(item) as Array<{ requestBody?: { required?: boolean, content?: Record<string, { schema?: { type?: unknown } }> } }>) {
    const body = op.requestBody
    const type = body?.content?.['application/json']?.schema?.type
    if (body !== undefined && Array.isArray(type) && type.includes('null')) body.required = false
  }
}

const sorted = <T>(o: Record<string, T> | undefined): Record<string, T> =>
  Object.fromEntries(Object.entries(o ?? {}).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))

/**
 * The document of both instances (both `ready`). Deterministic: paths and
 * component names sorted, everything else in the order the code declares it.
 */
export function openapiDocument (pub: FastifyInstance, admin: FastifyInstance, servers: OpenApiServers): Record<string, unknown> {
  const p = pub.swagger() as Described
  const a = admin.swagger() as Described
  const adminServers = [{ url: servers.admin, description: 'admin port (private)' }]
  const paths: Record<string, Record<string, unknown>> = { ...p.paths }
  for (const item of Object.values(paths)) optionalBodies(item)
  for (const [path, item] of Object.entries(a.paths ?? {})) {
    if (paths[path] !== undefined) throw new Error(`OpenAPI: ${path} is on both the public and the admin port`)
    paths[path] = { servers: adminServers, ...item }
  }
  const envelope: JsonSchema = {
    type: 'object',
    description: 'What the gateway answers itself, success (code 200) or error',
    required: ['code', 'message', 'data'],
    properties: {
      code: { type: 'integer', description: '200, or an ErrorCode' },
      message: { type: 'string', description: '"ok", or what went wrong (for people; branch on code)' },
      data: { type: ['object', 'array', 'null'], description: 'The answer; for errors null or details (`traceId` on 5xx, `errors` on 40001)' }
    }
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'wegate',
      version: version(),
      summary: 'Edge gateway for WeChat mini-program backends: its own API (login, tokens, WeChat services, operations)',
      description: DESCRIPTION,
      license: { name: 'MIT', identifier: 'MIT' }
    },
    servers: [{ url: servers.public, description: 'public port' }],
    tags: TAGS,
    paths: sorted(paths),
    components: {
      securitySchemes: SECURITY_SCHEMES,
      schemas: sorted({ ...p.components?.schemas, ...a.components?.schemas, Envelope: envelope, ErrorCode: errorCodeSchema() })
    }
  }
}

/** The document as published: pretty-printed, ending with a newline. */
export function openapiText (doc: Record<string, unknown>): string {
  return JSON.stringify(doc, null, 2) + '\n'
}

/** GET /openapi.json on the admin instance: built on the first request (both instances ready), then the same text. */
export function registerOpenApiRoute (admin: FastifyInstance, pub: FastifyInstance, servers: OpenApiServers): void {
  let text: string | undefined
  admin.get('/openapi.json', {
    schema: {
      tags: [TAG_ADMIN],
      operationId: 'openapi',
      summary: 'This document (OpenAPI 3.1)',
      description: 'No token: it holds no secrets, and the admin port is private. Import it into Apifox or Postman by URL (docs/openapi.md). ' +
        'With `workers:`, the primary asks a ready worker (50032 when none is).',
      security: [],
      response: { 200: { description: 'The OpenAPI document', content: { 'application/json': { schema: { type: 'object' } } } }, ...errorResponses('INTERNAL', 'WORKERS_UNAVAILABLE') }
    }
  }, async (_request, reply) => {
    if (text === undefined) {
      await pub.ready()
      text = openapiText(openapiDocument(pub, admin, servers))
    }
    return reply.header('content-type', 'application/json; charset=utf-8').send(text)
  })
}
