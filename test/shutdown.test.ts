import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'

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
