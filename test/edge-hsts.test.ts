/**
 * `listen.tls.hsts`: Strict-Transport-Security on every answer over TLS (HTTP/1.1
 * and HTTP/2; the gateway's own and proxied ones, replacing an upstream's), none
 * without the setting (an upstream's passes), and a reload changes it.
 */
import { connect as h2connect, type IncomingHttpHeaders } from 'node:http2'
import t from 'tap'
import { Agent, request } from 'undici'
import { startGateway, writeConfigFile } from './helpers/gateway.js'
import { createTestCa } from './helpers/tls.js'
import { startServer } from './helpers/upstream.js'

const ca = await createTestCa(t)
const served = await ca.issue('server')
const upstream = await startServer(t, (req, res) => {
  req.resume()
  res.setHeader('strict-transport-security', 'max-age=1')
  res.end('from upstream')
})
const config = (hsts: Record<string, unknown> | undefined) => ({
  listen: { host: '127.0.0.1', port: 0, tls: { certFile: served.certFile, keyFile: served.keyFile, ...(hsts === undefined ? {} : { hsts }) } },
  routes: [{ name: 'up', prefix: '/up', auth: 'public', upstreams: [{ name: 'v1', url: upstream.url, weight: 1 }] }]
})
const gw = await startGateway(t, config({ maxAge: '1h', includeSubDomains: true }))
const agent = new Agent({ connect: { ca: ca.ca } })
t.teardown(() => agent.close())

async function h1 (path: string): Promise<{ status: number, sts: unknown }> {
  const r = await request(gw.url + path, { dispatcher: agent })
  await r.body.text()
  return { status: r.statusCode, sts: r.headers['strict-transport-security'] }
}

async function h2 (path: string): Promise<{ status: number, sts: unknown }> {
  const session = h2connect(gw.url, { ca: ca.ca })
  try {
    return await new Promise((resolve, reject) => {
      const stream = session.request({ ':path': path })
      let got: IncomingHttpHeaders = {}
      stream.on('response', (h) => { got = h })
      stream.on('error', reject)
      stream.resume()
      stream.on('end', () => resolve({ status: Number(got[':status']), sts: got['strict-transport-security'] }))
    })
  } finally {
    session.destroy()
  }
}

t.test('over TLS, HTTP/1.1 and HTTP/2: the gateway\'s answers and proxied ones carry the configured header', async (t) => {
  const want = 'max-age=3600; includeSubDomains'
  t.same(await h1('/auth/login'), { status: 405, sts: want }, 'the gateway\'s own answer (an error envelope)')
  t.same(await h1('/up/x'), { status: 200, sts: want }, 'a proxied answer: the upstream\'s max-age=1 replaced')
  t.same(await h1('/nowhere'), { status: 404, sts: want })
  t.same(await h2('/up/x'), { status: 200, sts: want }, 'HTTP/2')
  t.same(await h2('/auth/login'), { status: 405, sts: want })
})

t.test('a reload changes it; without the setting the gateway adds none and an upstream\'s passes', async (t) => {
  t.equal((await gw.gateway.reload(await writeConfigFile(config({ maxAge: '5m' })))).status, 'applied')
  t.same(await h1('/auth/login'), { status: 405, sts: 'max-age=300' })
  t.same(await h2('/up/x'), { status: 200, sts: 'max-age=300' })
  t.equal((await gw.gateway.reload(await writeConfigFile(config(undefined)))).status, 'applied')
  t.same(await h1('/auth/login'), { status: 405, sts: undefined })
  t.same(await h1('/up/x'), { status: 200, sts: 'max-age=1' }, 'the upstream\'s own, untouched')
})

t.test('never over plain http', async (t) => {
  const plain = await startGateway(t, { routes: [{ name: 'up', prefix: '/up', auth: 'public', upstreams: [{ name: 'v1', url: upstream.url, weight: 1 }] }] })
  const r = await request(plain.url + '/auth/login')
  await r.body.text()
  t.equal(r.headers['strict-transport-security'], undefined)
})
