/**
 * Tiny real HTTP upstreams on 127.0.0.1:0 for end-to-end tests: each answers
 * with its own name and what it received, or with a fixed status.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TestContext } from './gateway.js'

export interface Received {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: string
}

export interface TestUpstream {
  url: string
  name: string
  /** Requests received, in order. */
  received: Received[]
  /** Answer with this status from now on (default 200). */
  setStatus: (status: number) => void
}

export async function startUpstream (t: TestContext, name: string, opts: { status?: number } = {}): Promise<TestUpstream> {
  let status = opts.status ?? 200
  const received: Received[] = []
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') }
      received.push(r)
      const body = JSON.stringify({ upstream: name, method: r.method, url: r.url, headers: r.headers })
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    name,
    received,
    setStatus: (s) => { status = s }
  }
}
