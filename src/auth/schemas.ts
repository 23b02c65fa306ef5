/** Request schemas of the /auth endpoints (compiled once by Fastify). */

export const loginSchema = {
  body: {
    type: 'object',
    properties: {
      // wx.login codes are 32 characters today; 128 leaves room without inviting abuse.
      code: { type: 'string', minLength: 1, maxLength: 128 },
      appId: { type: 'string', minLength: 1, maxLength: 64 },
      // A browser login's ticket (web-login.ts): 43 characters.
      ticket: { type: 'string', minLength: 1, maxLength: 128 },
      // The page's PKCE-style verifier (RFC 7636 §4.1), when it sent a codeChallenge to authorize.
      codeVerifier: { type: 'string', pattern: '^[A-Za-z0-9._~-]{43,128}$' }
    },
    // A code (mini program, App) or a ticket (browser login, with its verifier), not both.
    oneOf: [{ required: ['code'], not: { required: ['codeVerifier'] } }, { required: ['ticket'] }]
  }
} as const

export const authorizeSchema = {
  querystring: {
    type: 'object',
    required: ['redirect'],
    properties: {
      appId: { type: 'string', minLength: 1, maxLength: 64 },
      redirect: { type: 'string', minLength: 1, maxLength: 2048 },
      scope: { type: 'string', minLength: 1, maxLength: 32 },
      // base64url(SHA-256(codeVerifier)), as PKCE's S256: binds the ticket to the page that holds the verifier.
      codeChallenge: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' }
    }
  }
} as const

export const callbackSchema = {
  querystring: {
    type: 'object',
    properties: {
      code: { type: 'string', maxLength: 256 },
      state: { type: 'string', maxLength: 128 }
    }
  }
} as const

export const refreshSchema = {
  body: {
    type: 'object',
    required: ['refreshToken'],
    properties: { refreshToken: { type: 'string', minLength: 1, maxLength: 256 } }
  }
} as const

export const logoutSchema = {
  body: {
    type: ['object', 'null'],
    properties: {
      refreshToken: { type: 'string', minLength: 1, maxLength: 256 },
      all: { type: 'boolean' }
    }
  }
} as const
