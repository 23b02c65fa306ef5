/**
 * WeChat's "open data" with the user's session_key: `encryptedData` (AES-128-CBC,
 * PKCS#7, key = session_key, both base64) decrypted and checked — the watermark
 * names this app and, when asked, is recent; `rawData` + `signature` match the
 * session. Every failure is a catalog error whose message tells the mini program
 * what to do; library text never reaches the client. Pure: no I/O, clock passed in.
 */
import { createDecipheriv, createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { GatewayError } from '../errors.js'

export interface DecryptInput {
  encryptedData: string
  iv: string
  /** The plain text WeChat signed (e.g. wx.getUserInfo's rawData); checked with `signature`. */
  rawData?: string
  /** Hex sha1(rawData + session_key). */
  signature?: string
}

export interface DecryptContext {
  /** The caller's appId (from the verified access token): the watermark must name it. */
  appId: string
  /** Never logged, never sent. */
  sessionKey: string
  /** Refuse data whose watermark is older than this, ms; absent or 0: no age check. */
  maxAgeMs?: number
  /** Now, epoch ms (for the age check). */
  nowMs: number
}

// Standard base64 (WeChat never sends base64url), padding optional.
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/
const AES_BLOCK = 16

/** Decrypt and check one encryptedData; returns the decrypted object (watermark included). */
export function decryptOpenData (input: DecryptInput, ctx: DecryptContext): Record<string, unknown> {
  const data = base64(input.encryptedData, 'encryptedData')
  const iv = base64(input.iv, 'iv')
  if (iv.length !== AES_BLOCK) throw malformed(`iv decodes to ${iv.length} bytes, not 16`)
  if (data.length === 0 || data.length % AES_BLOCK !== 0) throw malformed(`encryptedData decodes to ${data.length} bytes, not a positive multiple of 16`)
  if ((input.rawData === undefined) !== (input.signature === undefined)) {
    throw new GatewayError('VALIDATION_FAILED', { message: 'rawData and signature go together: send both or neither' })
  }
  const key = Buffer.from(ctx.sessionKey, 'base64')
  // A stored key of another length would be our bug, but the client's remedy is the same: log in again.
  if (key.length !== AES_BLOCK) throw new GatewayError('DECRYPT_FAILED', { detail: `stored session_key decodes to ${key.length} bytes` })

  if (input.rawData !== undefined && input.signature !== undefined &&
      !sameText(input.signature.toLowerCase(), sha1Hex(input.rawData + ctx.sessionKey))) {
    throw new GatewayError('SIGNATURE_MISMATCH', { detail: 'sha1(rawData + session_key) differs from signature' })
  }

  const value = parseObject(decryptAes(data, key, iv))
  checkWatermark(value, ctx)
  return value
}

/** `signature` for WeChat's checksession: hmac_sha256 of the empty string keyed with the session_key, hex. */
export function sessionSignature (sessionKey: string): string {
  return createHmac('sha256', sessionKey).update('').digest('hex')
}

/** Equality of two strings in time that does not depend on where they differ (or on their lengths). */
export function sameText (a: string, b: string): boolean {
  // Hashing first gives equal-length inputs, so timingSafeEqual never throws or leaks a length.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest())
}

function sha1Hex (text: string): string {
  return createHash('sha1').update(text, 'utf8').digest('hex')
}

function base64 (text: string, field: string): Buffer {
  if (!BASE64.test(text)) throw malformed(`${field} is not base64`)
  return Buffer.from(text, 'base64')
}

function malformed (detail: string): GatewayError {
  return new GatewayError('ENCRYPTED_DATA_MALFORMED', { detail })
}

function decryptAes (data: Buffer, key: Buffer, iv: Buffer): string {
  try {
    const decipher = createDecipheriv('aes-128-cbc', key, iv)
    return Buffer.concat([decipher.update(data), decipher.final()]).toString('utf8')
  } catch (err) {
    // "bad decrypt": the padding is wrong, i.e. another key (a newer wx.login) encrypted it.
    throw new GatewayError('DECRYPT_FAILED', { detail: 'AES-128-CBC padding check failed (session_key is not the one that encrypted the data)', cause: err })
  }
}

function parseObject (text: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    throw new GatewayError('DECRYPT_FAILED', { detail: 'decrypted bytes are not JSON' })
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new GatewayError('DECRYPT_FAILED', { detail: 'decrypted JSON is not an object' })
  }
  return value as Record<string, unknown>
}

function checkWatermark (value: Record<string, unknown>, ctx: DecryptContext): void {
  const mark = value.watermark
  const w = typeof mark === 'object' && mark !== null ? mark as Record<string, unknown> : {}
  if (typeof w.appid !== 'string' || !sameText(w.appid, ctx.appId)) {
    throw new GatewayError('DECRYPT_WRONG_APP', { detail: typeof w.appid === 'string' ? `watermark.appid ${w.appid}` : 'no watermark.appid' })
  }
  if (ctx.maxAgeMs === undefined || ctx.maxAgeMs <= 0) return
  // watermark.timestamp is in seconds.
  const ageMs = typeof w.timestamp === 'number' ? ctx.nowMs - w.timestamp * 1000 : Number.POSITIVE_INFINITY
  if (ageMs > ctx.maxAgeMs) {
    throw new GatewayError('DECRYPT_TOO_OLD', { detail: typeof w.timestamp === 'number' ? `watermark ${Math.round(ageMs / 1000)} s old` : 'no watermark.timestamp' })
  }
}
