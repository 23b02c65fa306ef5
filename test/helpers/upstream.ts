/**
 * Real upstream services for end-to-end tests: node:http servers on port 0 that
 * echo what they received, or misbehave on purpose (slow, reset, 503, huge).
 * Plus a raw-socket client for requests no HTTP library would send as written.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { createHash } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import type { TestContext } from './gateway.js'

/** What an echo upstream saw, as it answers it (JSON). */
export interface Echo {
  upstream: string
  method: string
  url: string
  headers: IncomingHttpHeaders
  /** Header names as sent on the wire (case kept), in order. */
  rawNames: string[]
  bodyLength: number
  bodySha256: string
  /** The body as UTF-8 when at most 64 KiB. */
  body: string
}

export interface Started {
  url: string
  port: number
  server: Server
  /** Requests seen, in arrival order. */
  seen: Echo[]
}

/** A server with a custom handler, closed with the test. */
export async function startServer (t: TestContext, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string, port: number, server: Server }> {
  const server = createServer(handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${port}`, port, server }
}

/** Read a whole request body; digest and length always, text when small. */
export async function readBody (req: IncomingMessage): Promise<{ length: number, sha256: string, text: string }> {
  const hash = createHash('sha256')
  const small: Buffer[] = []
  let length = 0
  for await (const chunk of req) {
    const b = chunk as Buffer
    hash.update(b)
    length += b.length
    if (length <= 65536) small.push(b)
  }
  return { length, sha256: hash.digest('hex'), text: length <= 65536 ? Buffer.concat(small).toString('utf8') : '' }
}

/** An upstream that answers every request with a JSON Echo and `x-upstream: <name>`. */
export async function startEcho (t: TestContext, name: string): Promise<Started> {
  const seen: Echo[] = []
  const s = await startServer(t, (req, res) => {
    readBody(req).then((body) => {
      const rawNames: string[] = []
      for (let i = 0; i < req.rawHeaders.length; i += 2) rawNames.push(req.rawHeaders[i])
      const echo: Echo = {
        upstream: name,
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawNames,
        bodyLength: body.length,
        bodySha256: body.sha256,
        body: body.text
      }
      seen.push(echo)
      const out = JSON.stringify(echo)
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name, 'content-length': Buffer.byteLength(out) })
      res.end(out)
    }, () => { res.destroy() })
  })
  return { ...s, seen }
}

/** A port nothing listens on (connection refused). */
export async function closedPort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: string
  /** Everything received, as text. */
  raw: string
}

/**
 * Send bytes exactly as written on a fresh connection and read until the server
 * closes (requests should carry `Connection: close`). `chunks` may be sent with
 * pauses (ms) between them.
 */
export async function rawRequest (url: string, chunks: string | Array<string | Buffer | number>, opts: { timeoutMs?: number } = {}): Promise<RawResponse> {
  const { hostname, port } = new URL(url)
  const socket = connect(Number(port), hostname)
  const parts: Buffer[] = []
  socket.on('data', (d: Buffer) => parts.push(d))
  const closed = new Promise<void>((resolve) => {
    socket.on('close', () => resolve())
    socket.on('error', () => resolve())
  })
  await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  for (const c of Array.isArray(chunks) ? chunks : [chunks]) {
    if (typeof c === 'number') await sleep(c)
    else if (!socket.destroyed) socket.write(c)
  }
  const timer = setTimeout(() => socket.destroy(), opts.timeoutMs ?? 10_000)
  await closed
  clearTimeout(timer)
  return parseResponse(Buffer.concat(parts).toString('utf8'))
}

/** Parse one HTTP/1.1 response (Content-Length or close-delimited; chunked decoded simply). */
export function parseResponse (raw: string): RawResponse {
  const split = raw.indexOf('\r\n\r\n')
  const head = split === -1 ? raw : raw.slice(0, split)
  let body = split === -1 ? '' : raw.slice(split + 4)
  const [statusLine = '', ...lines] = head.split('\r\n')
  const headers: Record<string, string> = {}
  for (const line of lines) {
    const i = line.indexOf(':')
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim()
  }
  if (headers['transfer-encoding'] === 'chunked') {
    let out = ''
    let rest = body
    for (;;) {
      const nl = rest.indexOf('\r\n')
      if (nl === -1) break
      const size = parseInt(rest.slice(0, nl), 16)
      if (!(size > 0)) break
      out += rest.slice(nl + 2, nl + 2 + size)
      rest = rest.slice(nl + 2 + size + 2)
    }
    body = out
  }
  return { status: Number(statusLine.split(' ')[1] ?? 0), headers, body, raw }
}

/** The envelope of a gateway-made error response. */
export function envelope (body: string): { code: number, message: string, data: unknown } {
  return JSON.parse(body) as { code: number, message: string, data: unknown }
}

// Fixed-status upstreams that record what they received (ops tests).

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
