/**
 * Schemas of the /auth endpoints and the JWKS (compiled once by Fastify): the
 * request is validated with them, the success answer serialised with them, and
 * @fastify/swagger describes the public API from them (gateway/openapi.ts,
 * docs/openapi.json). Only routes with `tags` are described.
 */
import { Type } from '@sinclair/typebox'
import { BODY_ERRORS, COMMON_ERRORS, TOKEN_ERRORS, envelope, errorResponses } from '../http/schemas.js'

/** Tags of the public API (gateway/openapi.ts describes them). */
export const TAG_LOGIN = 'Login and tokens'
export const TAG_BROWSER = 'Browser login'
/** The caller's access token, as an operation's `security`. */
export const ACCESS_TOKEN = [{ accessToken: [] }]

/** WeChat's answers when a login code is exchanged (code2Session, sns/oauth2). */
const WECHAT_LOGIN_ERRORS = ['WECHAT_CODE_INVALID', 'WECHAT_CODE_USED', 'WECHAT_USER_RISKY', 'WECHAT_UNAVAILABLE', 'WECHAT_QUOTA', 'WECHAT_BAD_RESPONSE', 'WECHAT_MISCONFIGURED', 'WECHAT_TIMEOUT'] as const

/** The token pair of a login or a refresh (sessions.ts pairOf), properties in the answer's order. */
export const tokenPair = Type.Object({
  accessToken: Type.String({ description: 'JWT; send it as `Authorization: Bearer <accessToken>`' }),
  tokenType: Type.Literal('Bearer'),
  expiresIn: Type.Integer({ minimum: 0, description: 'Seconds the access token stays valid' }),
  refreshToken: Type.String({ description: 'Opaque; works once: POST /auth/refresh spends it for a new pair' }),
  refreshExpiresIn: Type.Integer({ minimum: 0, description: 'Seconds the refresh token stays valid' }),
  openid: Type.String(),
  unionid: Type.Optional(Type.String({ description: 'When WeChat gives one (the app is bound to an Open Platform account)' }))
})

const redirectHeaders = (location: string) => ({
  Location: { type: 'string', description: location },
  'Cache-Control': { type: 'string', const: 'no-store' },
  'Referrer-Policy': { type: 'string', const: 'no-referrer' }
})

export const loginSchema = {
  tags: [TAG_LOGIN],
  operationId: 'login',
  summary: 'Log in with a wx.login code, an App\'s code or a browser login\'s ticket',
  description: 'Mini program: `wx.login()` → `{code}` (`appId` when several mini programs are configured). ' +
    'Mobile App: the SDK\'s code with the App\'s `appId`. Browser (officialAccount / website): the one-time `ticket` ' +
    'the callback put in the page\'s URL. Answers a token pair; WeChat\'s session_key never leaves the gateway. ' +
    'Limited by `rateLimits.login` (429 with `Retry-After`).',
  security: [],
  body: {
    type: 'object',
    properties: {
      // wx.login codes are 32 characters today; 128 leaves room without inviting abuse.
      code: { type: 'string', minLength: 1, maxLength: 128, description: 'wx.login\'s code (mini program) or the App SDK\'s code' },
      appId: { type: 'string', minLength: 1, maxLength: 64, description: 'Which configured app; needed when the code could be for several' },
      // A browser login's ticket (web-login.ts): 43 characters.
      ticket: { type: 'string', minLength: 1, maxLength: 128, description: 'The browser login\'s one-time ticket (60 s)' },
      // The page's PKCE-style verifier (RFC 7636 §4.1), when it sent a codeChallenge to authorize.
      codeVerifier: { type: 'string', pattern: '^[A-Za-z0-9._~-]{43,128}$', description: 'With a ticket: the verifier of the codeChallenge the page sent to authorize (PKCE-style, RFC 7636)' }
    },
    // A code (mini program, App) or a ticket (browser login, with its verifier), not both.
    oneOf: [{ required: ['code'], not: { required: ['codeVerifier'] } }, { required: ['ticket'] }]
  },
  response: {
    200: envelope(tokenPair, 'Logged in: a new session and its token pair'),
    ...errorResponses(WECHAT_LOGIN_ERRORS, 'LOGIN_TICKET_INVALID', 'LOGIN_TICKET_OTHER_BROWSER', 'SESSION_APP_UNKNOWN', 'UNKNOWN_APP', 'WRONG_LOGIN_FLOW', 'RATE_LIMITED', 'STORE_UNAVAILABLE', BODY_ERRORS, COMMON_ERRORS)
  }
} as const

export const authorizeSchema = {
  tags: [TAG_BROWSER],
  operationId: 'wechatAuthorize',
  summary: 'Start a browser login (officialAccount H5 or website QR)',
  description: 'Open in the browser. Checks `redirect` against the app\'s `redirects` prefixes, keeps a state bound to this browser ' +
    '(an HttpOnly cookie, 10 min) and redirects to WeChat\'s authorization page. Counts as a login for `rateLimits.login`. ' +
    'See docs/channels.md.',
  security: [],
  querystring: {
    type: 'object',
    required: ['redirect'],
    properties: {
      appId: { type: 'string', minLength: 1, maxLength: 64, description: 'The officialAccount or website app; needed when several are configured' },
      redirect: { type: 'string', minLength: 1, maxLength: 2048, description: 'Absolute URL under one of the app\'s `redirects`; the callback returns there' },
      scope: { type: 'string', minLength: 1, maxLength: 32, description: 'snsapi_userinfo (default) or snsapi_base in WeChat; snsapi_login for a website' },
      // base64url(SHA-256(codeVerifier)), as PKCE's S256: binds the ticket to the page that holds the verifier.
      codeChallenge: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$', description: 'base64url(SHA-256(codeVerifier)): binds the ticket to the page holding the verifier instead of the login cookie (a page on another origin)' }
    }
  },
  response: {
    302: { type: 'null', description: 'To WeChat\'s authorization page (or QR page)', headers: { ...redirectHeaders('WeChat\'s /connect/oauth2/authorize or /connect/qrconnect with this login\'s state'), 'Set-Cookie': { type: 'string', description: '__Host-wegate_wx_login: binds the login to this browser' } } },
    ...errorResponses('UNKNOWN_APP', 'WRONG_LOGIN_FLOW', 'REDIRECT_NOT_ALLOWED', 'VALIDATION_FAILED', 'RATE_LIMITED', 'STORE_UNAVAILABLE', COMMON_ERRORS)
  }
} as const

export const callbackSchema = {
  tags: [TAG_BROWSER],
  operationId: 'wechatCallback',
  summary: 'WeChat\'s return from a browser login (the app\'s redirect URI)',
  description: 'WeChat sends the browser here (`publicUrl` + /auth/wechat/callback, registered with WeChat). ' +
    'Takes the state once, exchanges the code and redirects to the login\'s `redirect` with `?ticket=` ' +
    '(redeem it with POST /auth/login `{ticket}` within 60 s), `?error=access_denied` (the user refused) or ' +
    '`?error=login_failed&errorCode=<code>`.',
  security: [],
  querystring: {
    type: 'object',
    properties: {
      code: { type: 'string', maxLength: 256, description: 'WeChat\'s code; absent when the user refused' },
      state: { type: 'string', maxLength: 128, description: 'The state the authorize step issued' }
    }
  },
  response: {
    302: { type: 'null', description: 'Back to the login\'s redirect URL', headers: redirectHeaders('The redirect URL with `ticket`, or with `error` (and `errorCode`)') },
    ...errorResponses('LOGIN_STATE_INVALID', 'UNKNOWN_APP', 'REDIRECT_NOT_ALLOWED', 'VALIDATION_FAILED', 'STORE_UNAVAILABLE', COMMON_ERRORS)
  }
} as const

export const refreshSchema = {
  tags: [TAG_LOGIN],
  operationId: 'refresh',
  summary: 'Trade a refresh token for a new pair (rotation)',
  description: 'A refresh token works once. Presenting a spent one again ends the whole session (reuse detection, 20011), ' +
    'except for a concurrent retry of the same refresh within a short grace window. The mini program calls this once ' +
    'on a 20004 (access token expired) and retries its request; on any other 2xxxx it logs in again.',
  security: [],
  body: {
    type: 'object',
    required: ['refreshToken'],
    properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 256 } }
  },
  response: {
    200: envelope(tokenPair, 'A new pair; the refresh token sent is spent'),
    ...errorResponses('REFRESH_INVALID', 'REFRESH_REUSED', 'REFRESH_EXPIRED', 'SESSION_APP_UNKNOWN', 'STORE_UNAVAILABLE', BODY_ERRORS, COMMON_ERRORS)
  }
} as const

export const logoutSchema = {
  tags: [TAG_LOGIN],
  operationId: 'logout',
  summary: 'End this session (or every session of the user)',
  description: 'The access token is revoked at once on every instance. With `refreshToken`, its family too; with `all: true`, ' +
    'every session of the user in this app. The body may be empty.',
  security: ACCESS_TOKEN,
  body: {
    type: ['object', 'null'],
    properties: {
      refreshToken: { type: 'string', minLength: 1, maxLength: 256, description: 'The session\'s refresh token, revoked with it' },
      all: { type: 'boolean', description: 'End every session of this user' }
    }
  },
  response: {
    200: envelope(Type.Null(), 'Logged out'),
    ...errorResponses(TOKEN_ERRORS, BODY_ERRORS, COMMON_ERRORS)
  }
} as const

/** One public key of the JWKS (RFC 7517): members by key type (RSA n/e, EC crv/x/y, OKP crv/x). */
const jwk = Type.Object({
  kty: Type.String(),
  kid: Type.String(),
  alg: Type.String(),
  use: Type.Literal('sig')
}, { additionalProperties: true })

export const jwksSchema = {
  tags: [TAG_LOGIN],
  operationId: 'jwks',
  summary: 'Public keys that verify the access tokens (JWKS)',
  description: 'For backends that verify tokens themselves (RS256, ES256, EdDSA). Plain JWKS (RFC 7517), not in the envelope; ' +
    'cacheable for 5 min. With HS256 there is no public key: 404, code 30032.',
  security: [],
  response: {
    200: Type.Object({ keys: Type.Array(jwk) }, { description: 'The JWK Set; the first key signs, all verify (rotation)', headers: { 'Cache-Control': { type: 'string', const: 'public, max-age=300' } } }),
    ...errorResponses('NO_JWKS', COMMON_ERRORS)
  }
} as const
