/**
 * Refresh tokens: `<fid>.<secret>` (22 + 43 base64url chars). The family id is
 * part of it so the store can find the family (one Redis hash slot) from the
 * token alone; the secret is 256 random bits; only SHA-256(token) is stored.
 * It has two segments, so it can never parse as a JWT.
 */
import { createHash, randomBytes } from 'node:crypto'

const REFRESH_RE = /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}$/

/** SHA-256 (hex) of a refresh token: what the store keys it by. */
export function hashRefresh (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

/** A new opaque refresh token; a new family id when `fid` is not given (login). */
export function newRefreshToken (fid?: string): { token: string, hash: string, fid: string } {
  const family = fid ?? randomBytes(16).toString('base64url')
  const token = `${family}.${randomBytes(32).toString('base64url')}`
  return { token, hash: hashRefresh(token), fid: family }
}

/** The family id inside a well-formed refresh token, or null when it is not one. */
export function refreshFamily (token: string): string | null {
  if (typeof token !== 'string' || !REFRESH_RE.test(token)) return null
  return token.slice(0, 22)
}
