/** Request schemas of the /auth endpoints (compiled once by Fastify). */

export const loginSchema = {
  body: {
    type: 'object',
    required: ['code'],
    properties: {
      // wx.login codes are 32 characters today; 128 leaves room without inviting abuse.
      code: { type: 'string', minLength: 1, maxLength: 128 },
      appId: { type: 'string', minLength: 1, maxLength: 64 }
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
