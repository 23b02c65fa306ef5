/**
 * Token key files replaced under a running `wegate serve` — in place then
 * SIGHUP, or a Kubernetes Secret update (the `..data` symlink swap) with no
 * signal at all — are a config change: the new keys sign, JWKS publishes them,
 * `wegate_config_info{hash}` changes. gateway.yaml itself is never touched.
 */
import { generateKeyPairSync, createPublicKey, verify, type KeyObject } from 'node:crypto'
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { baseConfig, merge, startGateway } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'
import { startGatewayProcess } from './helpers/process.js'
import { startUpstream } from './helpers/upstream.js'
import { APP_A, login, startWeChat } from './helpers/auth.js'

interface Pem { privatePem: string, publicPem: string, publicKey: KeyObject }

function es256 (): Pem {
  const kp = generateKeyPairSync('ec', { namedCurve: 'prime256v1' })
  return {
    privatePem: kp.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: kp.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    publicKey: kp.publicKey
  }
}

/** Does this ES256 JWT verify with `key`? (JOSE signatures are r||s, not DER.) */
function verifiesWith (token: string, key: KeyObject): boolean {
  const [h, p, s] = token.split('.')
  return verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(s ?? '', 'base64url'))
}

async function jwksKey (url: string): Promise<KeyObject> {
  const { keys } = await (await request(url + '/.well-known/jwks.json')).body.json() as { keys: Array<Record<string, string>> }
  return createPublicKey({ key: keys[0] as unknown as import('node:crypto').JsonWebKey, format: 'jwk' })
}

async function configHash (adminUrl: string): Promise<string | undefined> {
  const text = await (await request(adminUrl + '/metrics')).body.text()
  return /^wegate_config_info\{hash="([0-9a-f]+)"\} 1$/m.exec(text)?.[1]
}

/** A Secret volume as kubelet lays it out: files → ..data/<name>, ..data → ..<timestamp>. */
async function secretVolume (dir: string, files: Record<string, string>, n: number): Promise<void> {
  const stamp = `..2026_11_25_06_0${n}_00.${1000 + n}`
  await mkdir(join(dir, stamp))
  for (const [name, content] of Object.entries(files)) await writeFile(join(dir, stamp, name), content)
  if (n === 1) {
    await symlink(stamp, join(dir, '..data'))
    for (const name of Object.keys(files)) await symlink(`..data/${name}`, join(dir, name))
  } else {
    await symlink(stamp, join(dir, '..data_tmp'))
    await rename(join(dir, '..data_tmp'), join(dir, '..data'))
    await rm(join(dir, `..2026_11_25_06_0${n - 1}_00.${1000 + n - 1}`), { recursive: true })
  }
}

t.test('key files replaced, gateway.yaml untouched: the new keys sign after SIGHUP, and after a Secret swap by themselves', async (t: Test) => {
  const wx = await startWeChat(t)
  const root = await mkdtemp(join(tmpdir(), 'wegate-keys-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const keysDir = join(root, 'keys')
  await mkdir(keysDir)
  const k1 = es256()
  await secretVolume(keysDir, { 'signing.pem': k1.privatePem, 'signing.pub': k1.publicPem }, 1)
  const file = join(root, 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), {
    wechat: { baseUrl: wx.url, timeout: '2s', apps: [APP_A] },
    rateLimits: { login: { max: 1000, window: '1m', by: 'ip' } },
    tokens: {
      algorithm: 'ES256',
      keys: [{ kid: 'k1', privateKeyFile: join(keysDir, 'signing.pem'), publicKeyFile: join(keysDir, 'signing.pub') }]
    }
  })))
  const gw = await startGatewayProcess(t, file)
  t.teardown(() => gw.stop())
  const same = (a: KeyObject, b: KeyObject) => a.export({ type: 'spki', format: 'der' }).equals(b.export({ type: 'spki', format: 'der' }))
  /** Does JWKS publish `key` now? */
  const publishes = async (key: KeyObject) => same(await jwksKey(gw.url), key)

  const before = await login(gw.url, 'u-rot-1')
  t.ok(verifiesWith(before.accessToken, k1.publicKey), 'signed with the first key')
  t.ok(verifiesWith(before.accessToken, await jwksKey(gw.url)), 'which JWKS publishes')
  const hash1 = await configHash(gw.adminUrl)
  t.ok(hash1 !== undefined)

  // 1. Replaced in place (the same paths, new bytes), then SIGHUP.
  const k2 = es256()
  const current = join(keysDir, '..data')
  await writeFile(join(current, 'signing.pem'), k2.privatePem)
  await writeFile(join(current, 'signing.pub'), k2.publicPem)
  gw.child.kill('SIGHUP')
  await t.resolves(waitUntil(async () => await publishes(k2.publicKey), 5000, 50), 'regression: the reload is no longer "unchanged"')
  const second = await login(gw.url, 'u-rot-3')
  t.ok(verifiesWith(second.accessToken, k2.publicKey), 'tokens signed afterwards verify with the new public key')
  t.notOk(verifiesWith(second.accessToken, k1.publicKey), 'not with the old one')
  t.ok(verifiesWith(second.accessToken, await jwksKey(gw.url)), 'JWKS publishes the new key')
  const hash2 = await configHash(gw.adminUrl)
  t.not(hash2, hash1, 'wegate_config_info{hash} changed')
  t.ok(gw.lines.some((l) => l.msg === 'config reloaded' && l.from === hash1 && l.to === hash2), 'logged as a reload')

  // 2. A Secret update: a new timestamped dir and the ..data swap. No signal: the watcher sees it.
  const k3 = es256()
  await secretVolume(keysDir, { 'signing.pem': k3.privatePem, 'signing.pub': k3.publicPem }, 2)
  await t.resolves(waitUntil(async () => await publishes(k3.publicKey), 5000, 50), 'the key files are watched: the swap alone reloads')
  const third = await login(gw.url, 'u-rot-5')
  t.ok(verifiesWith(third.accessToken, k3.publicKey), 'signed with the key from the Secret update')
  t.ok(verifiesWith(third.accessToken, await jwksKey(gw.url)))
  t.not(await configHash(gw.adminUrl), hash2)
  t.notOk(gw.lines.some((l) => l.msg?.toString().startsWith('config reload refused')), 'no reload was refused on the way')
})

t.test('a key rotation alone does not end a canary rollback (it is keyed by the file, not the keys)', async (t: Test) => {
  const root = await mkdtemp(join(tmpdir(), 'wegate-keys-rb-'))
  t.teardown(() => rm(root, { recursive: true, force: true }))
  const keyFile = join(root, 'signing.pem')
  await writeFile(keyFile, es256().privatePem)
  const stable = await startUpstream(t, 'stable')
  const canary = await startUpstream(t, 'canary', { status: 500 })
  const patch = {
    tokens: { algorithm: 'ES256', keys: [{ kid: 'k1', privateKeyFile: keyFile }] },
    routes: [{
      name: 'orders',
      prefix: '/orders',
      auth: 'public',
      upstreams: [{ name: 'stable', url: stable.url, weight: 50 }, { name: 'canary', url: canary.url, weight: 50 }],
      canary: { sticky: 'none', rollback: { upstream: 'canary', errorRate: 0.01, window: '1m', minRequests: 20 } }
    }]
  }
  const gw = await startGateway(t, patch)
  for (let i = 0; i < 60; i++) await (await request(`${gw.url}/orders/${i}`)).body.dump()
  const weight = async () => /^wegate_upstream_weight\{route="orders",upstream="canary"\} (\d+)$/m.exec(await (await request(gw.adminUrl + '/metrics')).body.text())?.[1]
  t.equal(await weight(), '0', 'rolled back')

  // The same gateway.yaml text the gateway runs, with the key file rotated under it.
  const file = join(root, 'gateway.yaml')
  await writeFile(file, stringify(merge(baseConfig(), patch)))
  await writeFile(keyFile, es256().privatePem)
  const result = await gw.gateway.reload(file)
  t.equal(result.status, 'applied', 'the new key is applied')
  t.equal(await weight(), '0', 'the canary stays rolled back')
  const served = canary.received.length
  for (let i = 0; i < 20; i++) await (await request(`${gw.url}/orders/${i}`)).body.dump()
  t.equal(canary.received.length, served, 'and gets no traffic')
})
