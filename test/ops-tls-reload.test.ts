/**
 * The TLS certificate as an operator lives with it, on the real CLI: `wegate
 * check` refuses a key that is not the certificate's and warns about one that
 * expires within 14 days; a running `wegate serve` applies a rotated pair
 * (replaced by rename, no signal) to new connections while a load of requests
 * on new and kept-alive connections sees no failure, and refuses a mismatched
 * pair at reload, still serving the last good certificate.
 */
import { connect as h2connect, type ClientHttp2Session } from 'node:http2'
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { execFile } from 'node:child_process'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import t from 'tap'
import { Agent, request } from 'undici'
import { stringify } from 'yaml'
import { buildGateway } from '../src/app.js'
import { loadConfigFile } from '../src/config/load.js'
import { expiryWarning, loadTlsMaterial } from '../src/config/tls.js'
import { createLogger } from '../src/log.js'
import { metric, redisFor } from './helpers/auth.js'
import { baseConfig, LogCapture, merge, type TestContext } from './helpers/gateway.js'
import { startGatewayProcess } from './helpers/process.js'
import { createTestCa, replaceByRename, type TestCa } from './helpers/tls.js'
import { startEcho } from './helpers/upstream.js'
import { waitUntil } from './helpers/wait.js'

const CLI = ['--import', 'tsx', 'src/cli/main.ts']

function run (args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...CLI, ...args], { env: { PATH: process.env.PATH }, timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), stdout, stderr })
    })
  })
}

const ca = await createTestCa(t)
const echo = await startEcho(t, 'stable')

/** A gateway.yaml serving TLS from `live.pem` / `live.key` (copies of `cert`) in a fresh directory. */
async function tlsConfig (t: TestContext, cert: { certFile: string, keyFile: string }, patch: Record<string, unknown> = {}): Promise<{ file: string, certFile: string, keyFile: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-tls-live-'))
  t.teardown(async () => await rm(dir, { recursive: true, force: true }))
  const certFile = join(dir, 'live.pem')
  const keyFile = join(dir, 'live.key')
  await copyFile(cert.certFile, certFile)
  await copyFile(cert.keyFile, keyFile)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), {
    listen: { host: '127.0.0.1', port: 0, tls: { certFile, keyFile } },
    routes: [{ name: 'pub', prefix: '/pub', auth: 'public', upstreams: [{ name: 'stable', url: echo.url, weight: 1 }] }],
    ...patch
  })))
  return { file, certFile, keyFile }
}

/** One request on a brand-new TLS connection (HTTP/1.1): the status and the serial of the certificate it was shown. */
async function freshRequest (url: string, trust: TestCa): Promise<{ status: number, serial: string }> {
  const { hostname, port, host } = new URL(url)
  return await new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: hostname, port: Number(port), ca: trust.ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] }, () => {
      const serial = socket.getPeerCertificate().serialNumber.toUpperCase()
      let text = ''
      socket.setEncoding('utf8')
      socket.on('data', (d: string) => { text += d })
      socket.on('end', () => resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), serial }))
      socket.write(`GET /pub/fresh HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`)
    })
    socket.on('error', reject)
  })
}

/** The certificate serial an h2 session was made with. */
function sessionSerial (session: ClientHttp2Session): string {
  return (session.socket as import('node:tls').TLSSocket).getPeerCertificate().serialNumber.toUpperCase()
}

async function h2get (session: ClientHttp2Session, path: string): Promise<number> {
  return await new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let status = 0
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('error', reject)
    stream.resume()
    stream.on('end', () => resolve(status))
  })
}

t.test('wegate check: a key that is not the certificate\'s is a problem naming the file; a certificate expiring within 14 days is a warning', async (t) => {
  const good = await ca.issue('check-good')
  const other = await ca.issue('check-other')
  const ok = await tlsConfig(t, good)
  const passed = await run(['check', '-c', ok.file])
  t.equal(passed.code, 0, passed.stderr)
  t.equal(passed.stderr, '', 'no warning for a certificate valid 30 days')

  const mismatched = await tlsConfig(t, { certFile: good.certFile, keyFile: other.keyFile })
  const refused = await run(['check', '-c', mismatched.file])
  t.equal(refused.code, 1)
  t.match(refused.stderr, `listen.tls.keyFile: ${mismatched.keyFile}: is not the private key of the certificate in ${mismatched.certFile}`)
  t.match(refused.stderr, /\(line \d+\)/, 'with its line in gateway.yaml')

  const garbage = await tlsConfig(t, good)
  await writeFile(garbage.certFile, 'not a certificate\n')
  const unparsable = await run(['check', '-c', garbage.file])
  t.equal(unparsable.code, 1)
  t.match(unparsable.stderr, `listen.tls.certFile: ${garbage.certFile}: not a PEM certificate`)
  await rm(garbage.keyFile)
  t.match((await run(['check', '-c', garbage.file])).stderr, `listen.tls.keyFile: ${garbage.keyFile}: cannot read file: ENOENT`)

  const expiring = await tlsConfig(t, await ca.issue('check-expiring', { days: 7 }))
  const warned = await run(['check', '-c', expiring.file])
  t.equal(warned.code, 0, 'a warning, not a failure')
  t.match(warned.stderr, new RegExp(`warning: listen\\.tls\\.certFile: ${expiring.certFile}: certificate expires in [67] days \\(\\d{4}-`))

  // serve refuses what check refuses
  const serve = await run(['serve', '-c', mismatched.file])
  t.equal(serve.code, 1)
  t.match(serve.stderr, 'is not the private key of the certificate')
})

t.test('certificate rotation under load: new connections get the new certificate, kept-alive ones continue, no request fails', async (t) => {
  const first = await ca.issue('rot-first', { days: 30 })
  const second = await ca.issue('rot-second', { days: 60 })
  const live = await tlsConfig(t, first)
  const gw = await startGatewayProcess(t, live.file)
  t.teardown(() => gw.stop())
  t.match(gw.url, /^https:/)
  t.equal(await metric(gw.adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: first.serial }), Math.floor(first.notAfter / 1000))

  const keptH1 = new Agent({ connect: { ca: ca.ca }, pipelining: 1, connections: 1 })
  t.teardown(async () => await keptH1.close())
  const keptH2 = h2connect(gw.url, { ca: ca.ca })
  t.teardown(() => keptH2.destroy())
  t.equal(await h2get(keptH2, '/pub/warm'), 200)
  t.equal(sessionSerial(keptH2), first.serial)

  const failures: string[] = []
  const fresh: string[] = []
  let h1Count = 0
  let h2Count = 0
  const load = { stop: false }
  const loops = [
    (async () => {
      while (!load.stop) {
        try {
          const r = await freshRequest(gw.url, ca)
          if (r.status !== 200) failures.push(`fresh: ${r.status}`)
          fresh.push(r.serial)
        } catch (err) { failures.push(`fresh: ${(err as Error).message}`) }
      }
    })(),
    (async () => {
      while (!load.stop) {
        try {
          const r = await request(`${gw.url}/pub/kept`, { dispatcher: keptH1 })
          await r.body.dump()
          if (r.statusCode !== 200) failures.push(`h1: ${r.statusCode}`)
          h1Count++
        } catch (err) { failures.push(`h1: ${(err as Error).message}`) }
      }
    })(),
    ...[1, 2].map(async () => {
      while (!load.stop) {
        try {
          const status = await h2get(keptH2, '/pub/h2')
          if (status !== 200) failures.push(`h2: ${status}`)
          h2Count++
        } catch (err) { failures.push(`h2: ${(err as Error).message}`) }
      }
    })
  ]
  try {
    await waitUntil(() => fresh.length >= 5 && h1Count >= 5 && h2Count >= 5, 10_000)
    // The Secret-style replacement: each file written aside and renamed over, no signal.
    await replaceByRename(second.keyFile, live.keyFile)
    await replaceByRename(second.certFile, live.certFile)
    await waitUntil(() => fresh.at(-1) === second.serial, 10_000, 20)
    const seenAt = fresh.length
    const h1At = h1Count
    const h2At = h2Count
    await waitUntil(() => fresh.length >= seenAt + 5 && h1Count >= h1At + 5 && h2Count >= h2At + 5, 10_000)
  } finally {
    load.stop = true
    await Promise.all(loops)
  }
  t.same(failures, [], 'no request failed')
  t.ok(fresh.includes(first.serial) && fresh.includes(second.serial), 'new connections saw the first, then the second certificate')
  t.equal(fresh.lastIndexOf(first.serial) < fresh.indexOf(second.serial), true, 'and never the first again once the second was applied')
  t.equal(sessionSerial(keptH2), first.serial, 'the kept h2 session is the one made with the first certificate')
  t.equal(keptH2.closed || keptH2.destroyed, false, 'and is still open')
  t.ok(gw.lines.some((l) => l.msg === 'TLS certificate replaced; new connections get it' && l.serial === second.serial && l.from === first.serial))
  t.equal(await metric(gw.adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: second.serial }), Math.floor(second.notAfter / 1000), 'the metric follows the served certificate')
  t.equal(await metric(gw.adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: first.serial }), 0, 'the old serial is gone')
})

t.test('a mismatched pair at reload is refused and counted; the last good certificate keeps serving', async (t) => {
  const good = await ca.issue('reload-good')
  const other = await ca.issue('reload-other')
  const live = await tlsConfig(t, good)
  const gw = await startGatewayProcess(t, live.file)
  t.teardown(() => gw.stop())
  const failuresBefore = await metric(gw.adminUrl, 'wegate_config_reloads_total', { result: 'failure' })

  // Only the certificate is replaced: it no longer matches the key.
  await replaceByRename(other.certFile, live.certFile)
  const refused = await gw.waitLog((l) => typeof l.msg === 'string' && l.msg.startsWith('config reload refused'))
  t.match(refused.problems, [`listen.tls.keyFile: ${live.keyFile}: is not the private key of the certificate in ${live.certFile}`])
  t.equal(await metric(gw.adminUrl, 'wegate_config_reloads_total', { result: 'failure' }), failuresBefore + 1, 'counted')
  const served = await freshRequest(gw.url, ca)
  t.same(served, { status: 200, serial: good.serial }, 'new connections still get the last good certificate')
  t.equal(await metric(gw.adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: good.serial }), Math.floor(good.notAfter / 1000))

  // The matching key arrives: applied.
  await replaceByRename(other.keyFile, live.keyFile)
  await waitUntil(async () => (await freshRequest(gw.url, ca)).serial === other.serial, 10_000, 50)
  t.pass('the completed pair is applied')
})

t.test('reload: other cert/key paths are applied; turning TLS off is restart-only (TLS keeps serving)', async (t) => {
  const first = await ca.issue('paths-first')
  const second = await ca.issue('paths-second')
  const live = await tlsConfig(t, first)
  const logs = new LogCapture()
  const gateway = await buildGateway(await loadConfigFile(live.file), { logger: createLogger({ level: 'info', destination: logs }) })
  const { publicUrl } = await gateway.listen()
  t.teardown(async () => await gateway.shutdown())
  t.equal((await freshRequest(publicUrl, ca)).serial, first.serial)

  const yaml = await readFile(live.file, 'utf8')
  await writeFile(live.file, yaml.replace(live.certFile, second.certFile).replace(live.keyFile, second.keyFile))
  const moved = await gateway.reload()
  t.match(moved, { status: 'applied', restartRequired: [] }, 'new paths: a reload, not a restart')
  t.equal((await freshRequest(publicUrl, ca)).serial, second.serial)

  await writeFile(live.file, stringify(merge(baseConfig(), { listen: { host: '127.0.0.1', port: 0 } })))
  const off = await gateway.reload()
  t.match(off, { status: 'applied', restartRequired: ['listen'] })
  t.ok(logs.lines.some((l) => l.msg === 'these settings only change on restart; the running values stay until then'))
  t.same(await freshRequest(publicUrl, ca), { status: 404, serial: second.serial }, 'still HTTPS with the last certificate until a restart')
})

t.test('a certificate past its notAfter is refused; the expiry warning counts whole days', async (t) => {
  const cert = await ca.issue('expiry', { days: 10 })
  const tls = { certFile: cert.certFile, keyFile: cert.keyFile }
  const material = await loadTlsMaterial(tls, 'gateway.yaml')
  t.equal(material.serial, cert.serial)
  t.equal(material.notAfter, cert.notAfter)
  t.equal(expiryWarning(tls, material, cert.notAfter - 20 * 86_400_000), undefined, '20 days left: quiet')
  t.match(expiryWarning(tls, material, cert.notAfter - 13.5 * 86_400_000), { path: 'listen.tls.certFile', message: `${cert.certFile}: certificate expires in 13 days (` })
  const refusal = async (now: number): Promise<unknown> => await loadTlsMaterial(tls, 'gateway.yaml', now).then(() => 'accepted', (err: unknown) => err)
  t.match(await refusal(cert.notAfter + 1000), { problems: [{ path: 'listen.tls.certFile', message: new RegExp(`^${cert.certFile}: certificate expired at `) }] })
  t.match(await refusal(material.notBefore - 60_000), { problems: [{ path: 'listen.tls.certFile', message: /certificate is not valid before/ }] })
})

t.test('workers: 2 — both workers serve HTTPS and HTTP/2, and both apply a rotated certificate', async (t) => {
  const redis = await redisFor(t)
  const first = await ca.issue('workers-first')
  const second = await ca.issue('workers-second')
  const live = await tlsConfig(t, first, { workers: 2, store: { type: 'redis', url: redis.url } })
  const gw = await startGatewayProcess(t, live.file)
  t.teardown(() => gw.stop())
  await gw.waitLog((l) => l.msg === 'worker listening' && gw.lines.filter((x) => x.msg === 'worker listening').length === 2)
  t.match(gw.url, /^https:/)
  const session = h2connect(gw.url.replace('0.0.0.0', '127.0.0.1'), { ca: ca.ca })
  t.teardown(() => session.destroy())
  t.equal(await h2get(session, '/pub/x'), 200, 'HTTP/2 in a worker')

  await replaceByRename(second.keyFile, live.keyFile)
  await replaceByRename(second.certFile, live.certFile)
  // Connections are spread over the workers: ten new ones in a row all get the new certificate.
  await waitUntil(async () => {
    for (let i = 0; i < 10; i++) if ((await freshRequest(gw.url, ca)).serial !== second.serial) return false
    return true
  }, 15_000, 50)
  t.equal(gw.lines.filter((l) => l.msg === 'TLS certificate replaced; new connections get it' && l.serial === second.serial).length, 2, 'applied by each worker')
  t.equal(await metric(gw.adminUrl, 'wegate_tls_certificate_expiry_seconds', { serial: second.serial }), Math.floor(second.notAfter / 1000), 'the primary\'s summed metrics: the notAfter, not twice it')
})
