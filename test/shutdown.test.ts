import t from 'tap'
import { request } from 'undici'
import type { StoreConfig } from '../src/config/schema.js'
import { createLogger } from '../src/log.js'
import { createStore } from '../src/store/index.js'
import { startGateway, writeConfigFile } from './helpers/gateway.js'
import { startGatewayProcess } from './helpers/process.js'

t.test('shutdown: readiness drops, in-flight requests finish, then the port closes', async (t) => {
  let release: () => void = () => {}
  const held = new Promise<void>((resolve) => { release = resolve })
  const { gateway, url, adminUrl } = await startGateway(t, { shutdown: { delay: '300ms', timeout: '5s' } }, {
    before: (gw) => {
      gw.public.get('/slow-test', async () => {
        await held
        return { code: 200, message: 'ok', data: 'finished' }
      })
    }
  })

  const inFlight = request(`${url}/slow-test`)
  await new Promise((resolve) => setTimeout(resolve, 50))
  const stopping = gateway.shutdown()

  const ready = await request(`${adminUrl}/readyz`)
  t.equal(ready.statusCode, 503, 'not ready while draining')
  t.match(await ready.body.json(), { ready: false, draining: true })

  // During the delay new requests are still served, with Connection: close.
  const during = await request(`${url}/other`)
  t.equal(during.headers.connection, 'close')
  await during.body.dump()

  setTimeout(release, 400)
  const res = await inFlight
  t.equal(res.statusCode, 200, 'the in-flight request completed')
  t.same(await res.body.json(), { code: 200, message: 'ok', data: 'finished' })
  await stopping
  await t.rejects(request(`${url}/after`), 'the listener is closed')
})

t.test('shutdown is bounded: a request that never ends is cut at the timeout', async (t) => {
  const { gateway, url } = await startGateway(t, { shutdown: { delay: '0s', timeout: '300ms' } }, {
    before: (gw) => { gw.public.get('/forever-test', async () => await new Promise(() => {})) }
  })
  const stuck = request(`${url}/forever-test`).catch((err: Error) => err)
  await new Promise((resolve) => setTimeout(resolve, 50))
  // Resolves (the test would time out otherwise) although the handler never ends.
  await gateway.shutdown()
  t.type(await stuck, Error, 'the stuck request was cut')
})

t.test('app.close() alone releases what the gateway opened: admin listener, upstream connections, owned store', async (t) => {
  const { gateway, url, adminUrl } = await startGateway(t)
  const upstreams = gateway.public.upstreams
  await gateway.public.close()
  await t.rejects(request(`${url}/x`), 'the public listener is closed')
  await t.rejects(request(`${adminUrl}/healthz`), 'the admin listener is closed')
  t.notOk(gateway.store.healthy(), 'the store it created is closed')
  await t.rejects(request('http://127.0.0.1:9/', { dispatcher: upstreams }), { code: /^UND_ERR_(CLOSED|DESTROYED)$/ }, 'the upstream agent is closed')
  // shutdown() after close() is harmless (teardown calls it)
})

t.test('a store the caller injected is the caller\'s to close', async (t) => {
  const store = createStore({ type: 'memory' } as StoreConfig, createLogger({ level: 'silent' }))
  t.teardown(async () => await store.close())
  const { gateway } = await startGateway(t, {}, { store })
  await gateway.shutdown()
  t.ok(store.healthy(), 'still open after the gateway closed')
})

t.test('an unhandled exception or rejection in the real CLI is logged as fatal, drains, and exits 1', async (t) => {
  const file = await writeConfigFile({ shutdown: { delay: '0s', timeout: '2s' } })
  // Both at once: two processes, each crashed its own way.
  await Promise.all((['uncaught exception', 'unhandled rejection'] as const).map(async (kind) => {
    const gw = await startGatewayProcess(t, file, { CRASH_KIND: kind.split(' ')[1] }, ['./test/helpers/crash-on-signal.mjs'])
    gw.child.kill('SIGUSR2')
    t.equal(await gw.exited, 1, `${kind}: exit code 1`)
    t.match(gw.lines.find((l) => l.level === 60), { msg: `${kind}: draining and exiting`, err: { message: `test: ${kind}` } }, `${kind}: logged as fatal`)
    t.ok(gw.lines.some((l) => l.msg === 'shutdown complete'), `${kind}: drained before exiting`)
    t.notMatch(gw.stderr(), /DeprecationWarning|FSTDEP/, 'no deprecation warning at start')
  }))
})
