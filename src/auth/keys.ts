/**
 * Token keys from config: HS256 secrets, or asymmetric key files read, checked
 * against the algorithm and paired (public with private), and the JWKS that
 * publishes their public halves. Every problem is reported at once (ConfigError).
 */
import { createPrivateKey, createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError } from '../config/errors.js'
import type { TokensConfig } from '../config/schema.js'

export interface PublicJwk extends JsonWebKey {
  kid: string
  alg: string
  use: 'sig'
}

/** What signing and verifying need: per kid the key a verifier checks with, the signing key, the JWKS. */
export interface TokenKeys {
  verifyKeys: Array<{ kid: string, key: string }>
  signingKey: string
  signingKid: string
  /** Null for HS256: a shared secret is never published. */
  jwks: { keys: PublicJwk[] } | null
}

/** The key type node:crypto must report for each algorithm. */
const KEY_TYPES: Record<Exclude<TokensConfig['algorithm'], 'HS256'>, string[]> = {
  RS256: ['rsa'],
  ES256: ['ec'],
  EdDSA: ['ed25519', 'ed448']
}

async function loadAsymmetric (cfg: TokensConfig, problems: Array<{ path: string, message: string }>) {
  const alg = cfg.algorithm as keyof typeof KEY_TYPES
  const out: Array<{ kid: string, publicPem: string, publicKey: KeyObject, privatePem?: string }> = []
  for (const [i, k] of cfg.keys.entries()) {
    const at = `tokens.keys[${i}]`
    if (k.secret !== undefined) problems.push({ path: `${at}.secret`, message: `not used with ${alg}; give privateKeyFile / publicKeyFile` })
    if (i === 0 && k.privateKeyFile === undefined) {
      problems.push({ path: `${at}.privateKeyFile`, message: 'required on the first key: it signs new tokens' })
      continue
    }
    if (k.privateKeyFile === undefined && k.publicKeyFile === undefined) {
      problems.push({ path: at, message: 'needs publicKeyFile (or privateKeyFile)' })
      continue
    }
    try {
      const privatePem = k.privateKeyFile === undefined ? undefined : await readFile(k.privateKeyFile, 'utf8')
      // the public key: from its own file when given, else derived from the private key
      const publicKey: KeyObject = k.publicKeyFile !== undefined
        ? createPublicKey(await readFile(k.publicKeyFile, 'utf8'))
        : createPublicKey(createPrivateKey(privatePem ?? ''))
      const type = publicKey.asymmetricKeyType ?? ''
      if (!KEY_TYPES[alg].includes(type)) {
        problems.push({ path: at, message: `a ${type} key cannot be used with ${alg} (needs ${KEY_TYPES[alg].join(' or ')})` })
        continue
      }
      if (alg === 'ES256' && publicKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
        problems.push({ path: at, message: 'ES256 needs a P-256 (prime256v1) key' })
        continue
      }
      if (alg === 'RS256' && (publicKey.asymmetricKeyDetails?.modulusLength ?? 0) < 2048) {
        problems.push({ path: at, message: 'RS256 needs an RSA key of at least 2048 bits' })
        continue
      }
      const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
      if (privatePem !== undefined && k.publicKeyFile !== undefined &&
        createPublicKey(createPrivateKey(privatePem)).export({ type: 'spki', format: 'pem' }).toString() !== publicPem) {
        problems.push({ path: at, message: 'publicKeyFile does not match privateKeyFile' })
        continue
      }
      out.push({ kid: k.kid, publicPem, publicKey, ...(i === 0 && privatePem !== undefined ? { privatePem } : {}) })
    } catch (err) {
      problems.push({ path: at, message: `cannot read key: ${err instanceof Error ? err.message : String(err)}` })
    }
  }
  return out
}

/**
 * Load the keys of `tokens`. The config's own rules (unique kids, a secret on every HS256 key,
 * a private key on the first) were checked by the loader; this reports what only reading the
 * key files can tell (unreadable, wrong type or size, mismatched pair) as one ConfigError.
 */
export async function loadKeys (cfg: TokensConfig): Promise<TokenKeys> {
  const problems: Array<{ path: string, message: string }> = []
  const verifyKeys: Array<{ kid: string, key: string }> = []
  let signingKey: string
  let jwks: { keys: PublicJwk[] } | null = null
  if (cfg.algorithm === 'HS256') {
    for (const k of cfg.keys) if (k.secret !== undefined) verifyKeys.push({ kid: k.kid, key: k.secret })
    signingKey = cfg.keys[0]?.secret ?? ''
  } else {
    const loaded = await loadAsymmetric(cfg, problems)
    for (const k of loaded) verifyKeys.push({ kid: k.kid, key: k.publicPem })
    signingKey = loaded[0]?.privatePem ?? ''
    jwks = {
      keys: loaded.map((k) => ({ ...(k.publicKey.export({ format: 'jwk' })), kid: k.kid, alg: cfg.algorithm, use: 'sig' as const }))
    }
  }
  if (problems.length > 0) throw new ConfigError('tokens', problems)
  return { verifyKeys, signingKey, signingKid: cfg.keys[0].kid, jwks }
}
