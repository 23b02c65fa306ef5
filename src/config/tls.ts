/**
 * The public listener's certificate and key (`listen.tls`): read both PEM
 * files, check that they parse, belong together and that the certificate is
 * valid now, and describe what is served (expiry, serial) for the metric,
 * the log and `wegate check`. Every problem names the file it is about.
 */
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { ConfigError, type ConfigProblem } from './errors.js'
import type { GatewayConfig } from './schema.js'

export type TlsSettings = NonNullable<GatewayConfig['listen']['tls']>

/** A certificate/key pair that has been read and checked, ready for a secure context. */
export interface TlsMaterial {
  /** The certFile's bytes: the leaf certificate and its chain. */
  readonly cert: Buffer
  readonly key: Buffer
  /** The leaf's validity, ms since the epoch. */
  readonly notBefore: number
  readonly notAfter: number
  /** Upper-case hex, as `openssl x509 -serial` prints it. */
  readonly serial: string
  readonly subject: string
  /** sha256 of cert and key: tells a reload whether the served pair changed. */
  readonly fingerprint: string
}

/** Warn this long before the certificate expires (`wegate check`, the start log, the alert). */
export const EXPIRY_WARNING_MS = 14 * 24 * 3600_000

/**
 * TLS 1.2 suites: ECDHE key exchange with AEAD ciphers only (Mozilla's "intermediate"
 * list); TLS 1.3 keeps Node's defaults (all AEAD). No RSA key exchange, no CBC, no SHA-1 MACs.
 */
export const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305'
].join(':')

const CERT_PATH = 'listen.tls.certFile'
const KEY_PATH = 'listen.tls.keyFile'

/**
 * Read and check `tls` (relative paths from the working directory). Throws ConfigError
 * (`file` is the config's, for the message) listing every problem with the file it concerns.
 */
export async function loadTlsMaterial (tls: TlsSettings, file: string, now: number = Date.now()): Promise<TlsMaterial> {
  const problems: ConfigProblem[] = []
  const [cert, key] = await Promise.all([read(tls.certFile, CERT_PATH, problems), read(tls.keyFile, KEY_PATH, problems)])
  let x509: X509Certificate | undefined
  if (cert !== undefined) {
    try {
      x509 = new X509Certificate(cert)
    } catch {
      problems.push({ path: CERT_PATH, message: `${tls.certFile}: not a PEM certificate` })
    }
  }
  let privateKey: ReturnType<typeof createPrivateKey> | undefined
  if (key !== undefined) {
    try {
      privateKey = createPrivateKey(key)
    } catch {
      // never the key's bytes, nor the library's text about them
      problems.push({ path: KEY_PATH, message: `${tls.keyFile}: not a PEM private key (an encrypted key is not supported)` })
    }
  }
  if (x509 !== undefined && privateKey !== undefined && !x509.checkPrivateKey(privateKey)) {
    problems.push({ path: KEY_PATH, message: `${tls.keyFile}: is not the private key of the certificate in ${tls.certFile}` })
  }
  if (x509 !== undefined) {
    const notBefore = Date.parse(x509.validFrom)
    const notAfter = Date.parse(x509.validTo)
    if (now < notBefore) problems.push({ path: CERT_PATH, message: `${tls.certFile}: certificate is not valid before ${new Date(notBefore).toISOString()}` })
    if (now > notAfter) problems.push({ path: CERT_PATH, message: `${tls.certFile}: certificate expired at ${new Date(notAfter).toISOString()}` })
  }
  if (problems.length > 0 || x509 === undefined || cert === undefined || key === undefined) throw new ConfigError(file, problems)
  return {
    cert,
    key,
    notBefore: Date.parse(x509.validFrom),
    notAfter: Date.parse(x509.validTo),
    serial: x509.serialNumber.toUpperCase(),
    subject: x509.subject.replace(/\n/g, ', '),
    fingerprint: createHash('sha256').update(cert).update('\u0000').update(key).digest('hex').slice(0, 16)
  }
}

/** The warning for a certificate that expires within EXPIRY_WARNING_MS of `now`, if it does. */
export function expiryWarning (tls: TlsSettings, material: TlsMaterial, now: number = Date.now()): ConfigProblem | undefined {
  const left = material.notAfter - now
  if (left > EXPIRY_WARNING_MS) return undefined
  const days = Math.floor(left / 86_400_000)
  return { path: CERT_PATH, message: `${tls.certFile}: certificate expires in ${days} day${days === 1 ? '' : 's'} (${new Date(material.notAfter).toISOString()}); renew it` }
}

async function read (path: string, at: string, problems: ConfigProblem[]): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    problems.push({ path: at, message: `${path}: cannot read file: ${(err as NodeJS.ErrnoException).code ?? 'error'}` })
    return undefined
  }
}
