/**
 * Sealing: AES-256-GCM under keys HKDF-derived from secrets the client holds and
 * the store does not — the presented refresh token for a grace payload, the
 * wx.login code for a shared login outcome — so reading Redis opens neither.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

// HKDF info strings: one key per purpose, even from the same secret
const GRACE_INFO = Buffer.from('wegate refresh grace v1')
const LOGIN_INFO = Buffer.from('wegate login outcome v1')

/** Encrypt `payload` (the child refresh token) so only a holder of `presented` can read it back. */
export function sealGrace (presented: string, payload: string): string {
  // The store holds only SHA-256(token), so whoever reads Redis cannot open this during its ≤ graceMs life.
  return seal(presented, GRACE_INFO, payload)
}

/** Decrypt a sealed grace payload; null when it does not open with this token. */
export function openGrace (presented: string, sealed: string): string | null {
  return open(presented, GRACE_INFO, sealed)
}

/** SHA-256 (hex) of (appId, wx.login code): what the store keys a login's shared outcome by. */
export function loginKey (appId: string, code: string): string {
  return createHash('sha256').update(loginSecret(appId, code)).digest('hex')
}

/** Encrypt a login's outcome so only a holder of the same code can read it back. */
export function sealLogin (appId: string, code: string, payload: string): string {
  // The store keys it by SHA-256(appId, code): reading Redis gives neither the code nor this key.
  return seal(loginSecret(appId, code), LOGIN_INFO, payload)
}

/** Decrypt a sealed login outcome; null when it does not open with this code. */
export function openLogin (appId: string, code: string, sealed: string): string | null {
  return open(loginSecret(appId, code), LOGIN_INFO, sealed)
}

/** \0 cannot occur in an appId: (a, bc) and (ab, c) never collide. */
function loginSecret (appId: string, code: string): string {
  return `${appId}\u0000${code}`
}

/**
 * AES-256-GCM under a key derived (HKDF-SHA-256, `info` per purpose) from a secret
 * the client holds and the store does not: the refresh token for a grace payload,
 * the wx.login code for a shared login outcome. Output: base64url(iv · tag · body).
 */
function seal (secret: string, info: Buffer, payload: string): string {
  const iv = randomBytes(12)
  const c = createCipheriv('aes-256-gcm', sealKey(secret, info), iv)
  const body = Buffer.concat([c.update(payload, 'utf8'), c.final()])
  return Buffer.concat([iv, c.getAuthTag(), body]).toString('base64url')
}

/** The payload `seal` produced from the same secret and info; null when it does not open (wrong secret, tampered). */
function open (secret: string, info: Buffer, sealed: string): string | null {
  try {
    const raw = Buffer.from(sealed, 'base64url')
    if (raw.length < 28) return null
    const d = createDecipheriv('aes-256-gcm', sealKey(secret, info), raw.subarray(0, 12))
    d.setAuthTag(raw.subarray(12, 28))
    return Buffer.concat([d.update(raw.subarray(28)), d.final()]).toString('utf8')
  } catch {
    return null
  }
}

function sealKey (secret: string, info: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), info, 32))
}
