/**
 * Issue 11.5: requests refused before routing (by Node's HTTP parser or the
 * server) are answered with the envelope where a response can still be
 * written, counted in wegate_http_parser_errors_total{reason} and logged with
 * status, reason and peer — never with the bytes the client sent.
 */
import t from 'tap'
import { metric } from './helpers/auth.js'
import { startGateway } from './helpers/gateway.js'
import { envelope, rawRequest } from './helpers/upstream.js'

const { url, adminUrl, logs } = await startGateway(t, { limits: { headerSize: 4096 } })
const MARKER = 'smuggled-marker-7c1f'
const refusals = () => logs.lines.filter((l) => l.msg === 'request refused before routing')

const cases: Array<{ name: string, send: string, status: number, code: number, reason: string | RegExp }> = [
  { name: 'an HTTP/1.1 request without Host (Node answered a bare 400)', send: `GET /api/${MARKER} HTTP/1.1\r\n\r\n`, status: 400, code: 40000, reason: 'missing_host' },
  { name: 'an Expect other than 100-continue (Node answered a bare 417)', send: `GET / HTTP/1.1\r\nHost: x\r\nExpect: ${MARKER}\r\n\r\n`, status: 417, code: 30034, reason: 'expectation' },
  { name: 'CONNECT (Node closed the socket without a word)', send: `CONNECT ${MARKER}.example:443 HTTP/1.1\r\nHost: ${MARKER}.example:443\r\n\r\n`, status: 405, code: 30005, reason: 'connect' },
  {
    name: 'Content-Length with Transfer-Encoding (a smuggling attempt)',
    send: `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nX-Note: ${MARKER}\r\n\r\n0\r\n\r\n`,
    status: 400,
    code: 40000,
    reason: /^hpe_/
  },
  { name: 'a control character in a header value', send: `GET / HTTP/1.1\r\nHost: x\r\nX-Evil: ${MARKER}\x01\r\n\r\n`, status: 400, code: 40000, reason: /^hpe_/ },
  { name: 'a header block over limits.headerSize', send: `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${MARKER}${'a'.repeat(5000)}\r\n\r\n`, status: 431, code: 30031, reason: 'hpe_header_overflow' }
]

for (const c of cases) {
  t.test(`refused, answered, counted and logged: ${c.name}`, async (t) => {
    const before = refusals().length
    const res = await rawRequest(url, c.send, { timeoutMs: 5000 })
    t.equal(res.status, c.status, 'status')
    t.match(res.headers['content-type'], /^application\/json/, 'an envelope')
    t.equal(envelope(res.body).code, c.code, 'envelope code')
    t.equal(res.headers.connection, 'close', 'the connection is closed')
    const line = refusals()[before]
    t.match(line, { level: 30, status: c.status, reason: c.reason, peer: '127.0.0.1' }, 'one log line')
    t.equal(refusals().length, before + 1, 'exactly one')
    t.equal(await metric(adminUrl, 'wegate_http_parser_errors_total', { reason: String(line?.reason) }) > 0, true, 'counted by reason')
  })
}

t.test('nothing the client sent is written to the log', async (t) => {
  t.notMatch(logs.text(), MARKER, 'no request bytes in any log line')
  t.ok(refusals().length >= cases.length)
})
