/**
 * Backends' access to an app's shared access_token, on the admin port only:
 * GET /wechat/access-token?appId= and POST /wechat/access-token/refresh?appId=
 * (for a backend that got 40001; deduplicated like the gateway's own refreshes).
 * Both need `Authorization: Bearer <admin.apiToken>`, compared in constant time
 * and never logged; without an admin.apiToken the paths do not exist (404).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { GatewayError, ok } from '../errors.js'
import type { AccessTokenService } from './access-token.js'
import { sameText } from './decrypt.js'

export interface AccessTokenAdminOptions {
  /** admin.apiToken; undefined: the endpoints are not served. */
  apiToken: string | undefined
  tokens: AccessTokenService
}

const querySchema = { querystring: { type: 'object', required: ['appId'], properties: { appId: { type: 'string', minLength: 1, maxLength: 64 } } } } as const

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
  admin.get<Query>('/wechat/access-token', { schema: querySchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.tokens.get(request.query.appId))
  })
  admin.post<Query>('/wechat/access-token/refresh', { schema: querySchema, onRequest: guard }, async (request, reply) => {
    reply.header('cache-control', 'no-store')
    return ok(await opts.tokens.refresh(request.query.appId, 'backend'))
  })
}
