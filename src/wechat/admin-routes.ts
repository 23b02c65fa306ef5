/**
 * Backends' access to an app's shared access_token, on the admin port only:
 * GET /wechat/access-token?appId= and POST /wechat/access-token/refresh?appId=
 * (for a backend that got 40001; deduplicated like the gateway's own refreshes).
 * Both need `Authorization: Bearer <admin.apiToken>`, compared in constant time
 * and never logged; without an admin.apiToken the paths do not exist (404).
 */
import { Type } from '@sinclair/typebox'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { GatewayError, ok } from '../errors.js'
import { envelope, errorResponses } from '../http/schemas.js'
import type { AccessTokenService } from './access-token.js'
import { sameText } from './decrypt.js'

export interface AccessTokenAdminOptions {
  /** admin.apiToken; undefined: the endpoints are not served. */
  apiToken: string | undefined
  tokens: AccessTokenService
}

/** Tag of these endpoints (gateway/openapi.ts describes it). */
export const TAG_ACCESS_TOKEN = 'Admin: access_token'
/** How an endpoint behind admin.apiToken can be refused (and NO_ROUTE: without an admin.apiToken it does not exist). */
export const ADMIN_ERRORS = ['ADMIN_TOKEN_INVALID', 'NO_ROUTE', 'VALIDATION_FAILED', 'INTERNAL'] as const
/** The admin API token, as an operation's `security`. */
const ADMIN_TOKEN = [{ adminToken: [] }]

const accessToken = envelope(Type.Object({
  accessToken: Type.String({ description: 'The app\'s stable_token: pass it to WeChat\'s server API as access_token' }),
  expiresIn: Type.Integer({ minimum: 0, description: 'Seconds left, as WeChat counts them' })
}), 'The app\'s current access_token')
const tokenErrors = errorResponses(ADMIN_ERRORS, 'UNKNOWN_APP', 'STORE_UNAVAILABLE', 'WECHAT_UNAVAILABLE', 'WECHAT_API_QUOTA', 'WECHAT_BAD_RESPONSE', 'WECHAT_SERVICE_MISCONFIGURED', 'WECHAT_TIMEOUT')
const querystring = { type: 'object', required: ['appId'], properties: { appId: { type: 'string', minLength: 1, maxLength: 64, description: 'A configured app' } } } as const

const getSchema = {
  tags: [TAG_ACCESS_TOKEN],
  operationId: 'getAccessToken',
  summary: 'The app\'s shared access_token (stable_token), cached in the store',
  description: 'For backends that call WeChat\'s server API: one token per app for the whole deployment, refreshed by the ' +
    'gateway before it expires. Exists only when `admin.apiToken` is set.',
  security: ADMIN_TOKEN,
  querystring,
  response: { 200: accessToken, ...tokenErrors }
} as const

const refreshSchema = {
  tags: [TAG_ACCESS_TOKEN],
  operationId: 'refreshAccessToken',
  summary: 'Refresh the app\'s access_token after WeChat refused it (errcode 40001)',
  description: 'Deduplicated like the gateway\'s own refreshes: many backends reporting the same stale token cause one refresh. ' +
    'Exists only when `admin.apiToken` is set.',
  security: ADMIN_TOKEN,
  querystring,
  response: { 200: accessToken, ...tokenErrors }
} as const

type Query = { Querystring: { appId: string } }

const BEARER = /^bearer /i

/**
 * The onRequest hook of every admin endpoint behind admin.apiToken (access_token, rollouts).
 * Before validation: a caller without the token learns nothing, not even which parameter is missing.
 */
export function adminTokenGuard (apiToken: string): (request: FastifyRequest) => Promise<void> {
  return async (request) => {
    const given = request.headers.authorization
    // The scheme is case-insensitive (RFC 9110 §11.1); the token is compared in constant time.
    if (typeof given !== 'string' || !BEARER.test(given) || !sameText(given.slice(7), apiToken)) {
      throw new GatewayError('ADMIN_TOKEN_INVALID', { headers: { 'WWW-Authenticate': 'Bearer realm="wegate-admin"' } })
    }
  }
}

/** Add the access_token endpoints to the admin server (nothing when no apiToken is configured). */
export function registerAccessTokenAdmin (admin: FastifyInstance, opts: AccessTokenAdminOptions): void {
  const apiToken = opts.apiToken
  if (apiToken === undefined) return
  const guard = adminTokenGuard(apiToken)
  admin.get<Query>('/wechat/access-token', { schema: getSchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.tokens.get(request.query.appId))
  })
  admin.post<Query>('/wechat/access-token/refresh', { schema: refreshSchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.tokens.refresh(request.query.appId, 'backend'))
  })
}
