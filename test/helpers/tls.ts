/**
 * A throw-away certificate authority and server certificates made with the
 * openssl CLI (EC P-256: fast to make), in a temporary directory removed with
 * the test. Clients trust `ca.pem`; the gateway serves a `cert`/`key` pair.
 */
import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { TestContext } from './gateway.js'

const run = promisify(execFile)

export interface TestCa {
  dir: string
  /** The CA certificate (PEM) to trust in clients. */
  ca: Buffer
  /** Issue a server certificate for localhost / 127.0.0.1; returns its files and serial. */
  issue: (name: string, opts?: { days?: number, cn?: string }) => Promise<IssuedCert>
}

export interface IssuedCert {
  certFile: string
  keyFile: string
  /** Upper-case hex, as X509Certificate#serialNumber. */
  serial: string
  notAfter: number
}

export async function createTestCa (t: TestContext): Promise<TestCa> {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-tls-'))
  t.teardown(async () => await rm(dir, { recursive: true, force: true }))
  const caKey = join(dir, 'ca.key')
  const caCert = join(dir, 'ca.pem')
  await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', caKey])
  await run('openssl', ['req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '30', '-subj', '/CN=wegate test CA', '-out', caCert])
  const ext = join(dir, 'server.ext')
  await writeFile(ext, 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n')
  return {
    dir,
    ca: await readFile(caCert),
    async issue (name, opts = {}) {
      const keyFile = join(dir, `${name}.key`)
      const csr = join(dir, `${name}.csr`)
      const certFile = join(dir, `${name}.pem`)
      await run('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile])
      await run('openssl', ['req', '-new', '-key', keyFile, '-subj', `/CN=${opts.cn ?? 'localhost'}`, '-out', csr])
      await run('openssl', ['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', '0x' + randomSerial(),
        '-days', String(opts.days ?? 30), '-sha256', '-extfile', ext, '-out', certFile])
      const x509 = new X509Certificate(await readFile(certFile))
      return { certFile, keyFile, serial: x509.serialNumber.toUpperCase(), notAfter: Date.parse(x509.validTo) }
    }
  }
}

function randomSerial (): string {
  // 64 bits, first nibble non-zero: no leading-zero ambiguity in the printed serial
  return (1 + Math.floor(Math.random() * 15)).toString(16) + Array.from({ length: 15 }, () => Math.floor(Math.random() * 16).toString(16)).join('')
}

/** Replace `to` with a copy of `from` the way Secret rotations do: write aside, rename over. */
export async function replaceByRename (from: string, to: string): Promise<void> {
  const tmp = `${to}.tmp-${process.pid}`
  await writeFile(tmp, await readFile(from))
  await rename(tmp, to)
}
