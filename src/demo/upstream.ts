/**
 * The demo upstream `npm start` runs behind the gateway: it answers with what
 * a backend team sees — which version served the call and the identity headers
 * the gateway injected. A development aid, never used by the gateway itself.
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

export interface DemoUpstream {
  url: string
  close: () => Promise<void>
}

export async function startDemoUpstream (version: string, port: number, host = '127.0.0.1'): Promise<DemoUpstream> {
  const server: Server = createServer((req, res) => {
    const h = req.headers
    const body = JSON.stringify({
      service: `demo-${version}`,
      method: req.method,
      url: req.url,
      identity: { openid: h['x-openid'] ?? null, unionid: h['x-unionid'] ?? null, appid: h['x-appid'] ?? null },
      requestId: h['x-request-id'] ?? null
    }, null, 2) + '\n'
    res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body) })
    res.end(body)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, resolve)
  })
  const addr = server.address() as AddressInfo
  return {
    url: `http://${host}:${addr.port}`,
    close: async () => await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}
