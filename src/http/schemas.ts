/**
 * Response schemas of the gateway's own endpoints: the `{code, message, data}`
 * envelope around each success, and the error answers an endpoint can give,
 * derived from the catalog (errors.ts). Fastify serialises successes with them;
 * @fastify/swagger turns them into the OpenAPI description (gateway/openapi.ts).
 * Error bodies are sent as ready-made text (http/errors.ts): their schemas only
 * describe them, they never serialise them.
 */
import swagger from '@fastify/swagger'
import { Type, type TSchema } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { ErrorCatalog, type ErrorName } from '../errors.js'

/** A JSON Schema written out (not built with TypeBox). */
export type JsonSchema = Record<string, unknown>

/** The success envelope around `data`. */
export function envelope (data: TSchema, description: string): TSchema {
  return Type.Object({
    code: Type.Literal(200),
    message: Type.Literal('ok'),
    data
  }, { description })
}

const REASONS: Record<number, string> = {
  400: 'Bad request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not found',
  405: 'Method not allowed',
  409: 'Conflict',
  413: 'Payload too large',
  415: 'Unsupported media type',
  429: 'Too many requests',
  500: 'Internal error',
  502: 'Bad gateway',
  503: 'Service unavailable',
  504: 'Gateway timeout'
}

/**
 * What most answers of the gateway can fail with before or around the handler:
 * a malformed path (exact-spelling check), an unexpected fault, a draining gateway.
 */
export const COMMON_ERRORS: readonly ErrorName[] = ['BAD_PATH', 'INTERNAL', 'SHUTTING_DOWN']
/** What a JSON body can fail with before the handler sees it. */
export const BODY_ERRORS: readonly ErrorName[] = ['BAD_REQUEST', 'VALIDATION_FAILED', 'BODY_TOO_LARGE', 'UNSUPPORTED_MEDIA_TYPE']
/** Every way an access token (`Authorization: Bearer`) is refused. */
export const TOKEN_ERRORS: readonly ErrorName[] = [
  'TOKEN_MISSING', 'TOKEN_MALFORMED', 'TOKEN_BAD_SIGNATURE', 'TOKEN_EXPIRED', 'TOKEN_NOT_YET_VALID',
  'TOKEN_REVOKED', 'TOKEN_CLAIMS_INVALID', 'SESSION_APP_UNKNOWN', 'STORE_UNAVAILABLE'
]

const dataOf = (names: readonly ErrorName[], status: number): JsonSchema => {
  const validation = names.includes('VALIDATION_FAILED')
  const parts: string[] = []
  if (status >= 500) parts.push('`traceId`: the request\'s W3C trace id (also in the access line)')
  if (validation) parts.push('`errors`: for 40001, each failed rule as `{path, message}`')
  if (names.includes('ROLLOUT_UNKNOWN')) parts.push('`route`: for 30035, the route named')
  const description = parts.length === 0 ? 'null for these codes' : `null, or: ${parts.join('; ')}`
  return { type: ['object', 'null'], additionalProperties: true, description }
}

/**
 * The error responses of an endpoint that can fail with `names`, one per HTTP
 * status: the envelope with the codes of that status (name, code and message in
 * the description, the codes as an enum).
 */
export function errorResponses (...names: ReadonlyArray<ErrorName | readonly ErrorName[]>): Record<string, JsonSchema> {
  const byStatus = new Map<number, ErrorName[]>()
  for (const name of new Set(names.flat())) {
    const status = ErrorCatalog[name].status
    byStatus.set(status, [...(byStatus.get(status) ?? []), name])
  }
  const out: Record<string, JsonSchema> = {}
  for (const status of [...byStatus.keys()].sort((a, b) => a - b)) {
    const list = byStatus.get(status)!.sort((a, b) => ErrorCatalog[a].code - ErrorCatalog[b].code)
    const lines = list.map((n) => `\`${ErrorCatalog[n].code}\` ${n}: ${ErrorCatalog[n].message}`)
    out[String(status)] = {
      type: 'object',
      description: `${REASONS[status] ?? 'Error'}: ${lines.join('; ')}`,
      required: ['code', 'message', 'data'],
      properties: {
        code: { type: 'integer', enum: list.map((n) => ErrorCatalog[n].code) },
        message: { type: 'string' },
        data: dataOf(list, status)
      },
      // Lifted into the response's headers by @fastify/swagger.
      ...(status === 429 ? { headers: { 'Retry-After': { type: 'string', description: 'Seconds until the limit lets the caller through again' } } } : {}),
      ...(list.includes('ADMIN_TOKEN_INVALID') ? { headers: { 'WWW-Authenticate': { type: 'string', const: 'Bearer realm="wegate-admin"' } } } : {})
    }
  }
  return out
}

/** Every catalog code as a schema: its name as title, its status and message as description. */
export function errorCodeSchema (): JsonSchema {
  return {
    type: 'integer',
    description: 'Every error code the gateway answers with (src/errors.ts, docs/errors.md); success is 200.',
    oneOf: Object.entries(ErrorCatalog).map(([name, e]) => ({ const: e.code, title: name, description: `HTTP ${e.status}: ${e.message}` }))
  }
}

/** The two bearer tokens operations name in their `security`. */
export const SECURITY_SCHEMES = {
  accessToken: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT', description: 'The access token from POST /auth/login or /auth/refresh' },
  adminToken: { type: 'http', scheme: 'bearer', description: 'The admin API token: `admin.apiToken` in gateway.yaml (admin port only)' }
} as const

/**
 * Register @fastify/swagger on `instance`; await it before the instance's first
 * route (it collects routes in an `onRoute` hook). Only routes with `tags` are
 * described; gateway/openapi.ts builds the document.
 */
export async function describeRoutes (instance: FastifyInstance): Promise<void> {
  await instance.register(swagger, {
    openapi: { openapi: '3.1.0', info: { title: 'wegate', version: '0' }, components: { securitySchemes: SECURITY_SCHEMES } },
    hideUntagged: true
  })
}
