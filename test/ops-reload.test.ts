/**
 * Hot reload through the real `wegate serve` process: weights changed by an
 * in-place write, by an atomic rename and by SIGHUP while traffic flows, with
 * zero failed requests; broken files refused while the old config keeps serving.
 */
import { mkdtemp, rename, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { request } from 'undici'
import { stringify } from 'yaml'
import { baseConfig, merge } from './helpers/gateway.js'
import { waitUntil } from './helpers/wait.js'
import { startGatewayProcess } from './helpers/process.js'
import { startUpstream } from './helpers/upstream.js'

t.test('weights follow the file under continuous traffic; bad files are refused', async (t) => {
  const a = await startUpstream(t, 'a')
  const b = await startUpstream(t, 'b')
  const dir = await mkdtemp(join(tmpdir(), 'wegate-reload-'))
  const file = join(dir, 'gateway.yaml')
  const configWith = (wa: number, wb: number) => stringify(merge(baseConfig(), {
    routes: [{
      name: 'pub',
      prefix: '/pub',
      auth: 'public',
      upstreams: [{ name: 'a', url: a.url, weight: wa }, { name: 'b', url: b.url, weight: wb }],
      canary: { sticky: 'none' }
    }]
  }))
  await writeFile(file, configWith(1, 0))

  const gw = await startGatewayProcess(t, file)
  const { url, adminUrl, waitLog, child } = gw

  // Continuous traffic: 4 workers, every answer recorded.
  const traffic = { running: true }
  let failures = 0
  let total = 0
  const recent: string[] = []
  const worker = async () => {
    while (traffic.running) {
      try {
        const res = await request(`${url}/pub/x`)
        const body = await res.body.json() as { upstream?: string }
        total++
        if (res.statusCode !== 200) failures++
        else recent.push(body.upstream ?? '?')
        if (recent.length > 20) recent.shift()
      } catch {
        failures++
      }
    }
  }
  const workers = [worker(), worker(), worker(), worker()]
  // Every one of the last 20 answers came from `name`.
  const settledOn = async (name: string) => await waitUntil(() => recent.length === 20 && recent.every((u) => u === name), 10_000, 20)

  await t.resolves(settledOn('a'), 'serving a')

  await writeFile(file, configWith(0, 1)) // in place
  await t.resolves(settledOn('b'), 'in-place write applied')

  await writeFile(join(dir, 'tmp.yaml'), configWith(1, 0))
  await rename(join(dir, 'tmp.yaml'), file) // atomic rename, as editors and sed -i do
  await t.resolves(settledOn('a'), 'atomic rename applied')

  await writeFile(join(dir, 'tmp.yaml'), configWith(0, 1))
  await rename(join(dir, 'tmp.yaml'), file)
  child.kill('SIGHUP')
  await waitLog((l) => l.msg === 'reloading config' && l.signal === 'SIGHUP')
  await t.resolves(settledOn('b'), 'SIGHUP reload applied')

  await writeFile(file, 'routes:\n  - name: pub\n    prefix: /pub\n    upstreams: [ { name: a, url: ') // half-written
  await waitLog((l) => typeof l.msg === 'string' && l.msg.startsWith('config reload refused'))
  await writeFile(file, configWith(-1, 1))
  const refused = await waitLog((l) => Array.isArray(l.problems) && (l.problems as string[]).some((p) => p.startsWith('routes[0].upstreams[0].weight: must be >= 0')))
  t.match(refused.msg, /still serving [0-9a-f]{16}/, 'the log says the old config keeps serving')
  recent.length = 0
  await t.resolves(settledOn('b'), 'traffic continues on the last good config')

  const metrics = await (await request(`${adminUrl}/metrics`)).body.text()
  t.match(metrics, /^wegate_config_reloads_total\{result="success"\} 3$/m)
  t.match(metrics, /^wegate_config_reloads_total\{result="failure"\} 2$/m)
  t.match(metrics, /^wegate_upstream_weight\{route="pub",upstream="b"\} 1$/m)

  traffic.running = false
  await Promise.all(workers)
  t.equal(failures, 0, `zero failed requests out of ${total}`)
  t.ok(total > 100, 'traffic really flowed')
  t.equal(await gw.stop(), 0, 'SIGTERM: drained and exited 0')
})
