import { connect } from 'node:net'
import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'

/** Send raw bytes and read until the server closes or answers. */
async function raw (url: string, bytes: string | Buffer): Promise<string> {
  const { hostname, port } = new URL(url)
  return await new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname)
    let data = ''
    socket.on('data', (d) => { data += d.toString('latin1') })
    socket.on('end', () => resolve(data))
    socket.on('close', () => resolve(data))
    socket.on('error', reject)
    socket.write(bytes)
  })
}

t.test('unknown path is a 404 envelope in the 30000s', async (t) => {
  const { url } = await startGateway(t)
  const res = await request(`${url}/nope/x?y=1`)
  t.equal(res.statusCode, 404)
  t.match(res.headers['content-type'], /application\/json/)
  const body = await res.body.json() as { code: number, message: string, data: unknown }
  t.same(body, { code: 30004, message: 'No route matches this path', data: null })
})

t.test('malformed JSON, wrong types, oversized and unsupported bodies are envelopes', async (t) => {
  const { url } = await startGateway(t, { limits: { authBodyLimit: '1kb' } }, {
    before: (gw) => {
      gw.public.post('/echo-test', {
        schema: { body: { type: 'object', required: ['code'], properties: { code: { type: 'string', maxLength: 64 } }, additionalProperties: false } }
      }, async (req) => ({ code: 200, message: 'ok', data: req.body }))
    }
  })
  const post = async (body: string, type = 'application/json') => {
    const res = await request(`${url}/echo-test`, { method: 'POST', body, headers: { 'content-type': type } })
    return { status: res.statusCode, body: await res.body.json() as { code: number, message: string, data: unknown } }
  }

  const bad = await post('{"code": ')
  t.equal(bad.status, 400)
  t.equal(bad.body.code, 40000)
  t.notMatch(bad.body.message, /Unexpected|JSON\.parse|position/, 'no parser text')

  const typed = await post('{"code": 42}')
  t.equal(typed.status, 400)
  t.equal(typed.body.code, 40001)
  t.match(typed.body.message, /code/)

  const notObject = await post('[1,2,3]')
  t.equal(notObject.status, 400)
  t.equal(notObject.body.code, 40001)

  const huge = await post(JSON.stringify({ code: 'x'.repeat(5000) }))
  t.equal(huge.status, 413)
  t.equal(huge.body.code, 30013)

  const form = await post('code=1', 'application/x-www-form-urlencoded')
  t.equal(form.status, 415)
  t.equal(form.body.code, 40015)

  const ok = await post('{"code":"abc"}')
  t.equal(ok.status, 200)
  t.same(ok.body.data, { code: 'abc' })
})

t.test('a 5xx never shows internal messages or stacks; the log has them', async (t) => {
  const { url, logs } = await startGateway(t, {}, {
    before: (gw) => { gw.public.get('/boom-test', async () => { throw new Error('db password is hunter2') }) }
  })
  const res = await request(`${url}/boom-test`)
  t.equal(res.statusCode, 500)
  const text = await res.body.text()
  const body = JSON.parse(text) as { data: { traceId: string } }
  t.same(body, { code: 50000, message: 'Internal error', data: { traceId: body.data.traceId } }, 'only the trace id, nothing internal')
  t.match(body.data.traceId, /^[0-9a-f]{32}$/)
  t.notMatch(text, /hunter2|at .*\.ts|stack/)
  t.match(logs.text(), /hunter2/, 'the operator sees the cause in the log')
})

t.test('oversized headers get a 431 envelope', async (t) => {
  const { url } = await startGateway(t, { limits: { headerSize: '2kb' } })
  const answer = await raw(url, `GET /x HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`)
  t.match(answer, /^HTTP\/1\.1 431 /)
  t.match(answer, /"code":30031/)
})

t.test('garbage on the socket gets a 400 envelope, not a crash', async (t) => {
  const { url } = await startGateway(t)
  const answer = await raw(url, 'HELLO THERE\r\n\r\n')
  t.match(answer, /^HTTP\/1\.1 400 /)
  t.match(answer, /"code":40000/)
  const after = await request(`${url}/still-alive`)
  t.equal(after.statusCode, 404, 'the gateway keeps serving')
  await after.body.dump()
})

t.test('a request that is not received in time gets a 408 envelope', async (t) => {
  const { url } = await startGateway(t, { limits: { headersTimeout: '300ms', requestTimeout: '500ms' } })
  const { hostname, port } = new URL(url)
  const answer = await new Promise<string>((resolve) => {
    const socket = connect(Number(port), hostname)
    let data = ''
    socket.on('data', (d) => { data += d.toString() })
    socket.on('close', () => resolve(data))
    // Headers trickle in and never finish.
    socket.write('GET /slow HTTP/1.1\r\nHost: a\r\n')
  })
  t.match(answer, /^HTTP\/1\.1 408 /)
  t.match(answer, /"code":30008/)
})

t.test('X-Request-Id is honoured when sane, generated otherwise, and logged on the access line', async (t) => {
  const { url, logs } = await startGateway(t)
  const given = await request(`${url}/a?token=secret-in-query`, { headers: { 'x-request-id': 'abc-123', authorization: 'Bearer eyJhbGciOi.secret.sig' } })
  t.equal(given.headers['x-request-id'], 'abc-123')
  await given.body.dump()
  const hostile = await request(`${url}/b`, { headers: { 'x-request-id': 'x y"{}' + 'z'.repeat(300) } })
  const generated = hostile.headers['x-request-id'] as string
  t.match(generated, /^[0-9a-f-]{36}$/)
  await hostile.body.dump()

  const access = logs.lines.filter((l) => l.msg === 'access')
  t.equal(access.length, 2)
  t.match(access[0], { reqId: 'abc-123', method: 'GET', path: '/a', route: 'none', upstream: 'none', status: 404, code: 30004 })
  t.type(access[0].ms, 'number')
  t.notMatch(logs.text(), /secret-in-query|eyJhbGciOi/, 'neither query strings nor Authorization reach the log')
})
