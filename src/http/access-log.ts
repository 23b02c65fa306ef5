/**
 * The access line, one per request. It is the one log line every request pays
 * for, so it is assembled directly instead of through pino's generic path
 * (object walk, redaction scan, a Date per line): the fields are fixed and known
 * to be safe — the path has no query string, names come from the config, the
 * request id is ours or matched a strict pattern, trace ids are checked hex — and only the path needs JSON
 * escaping. The line has the same shape as a pino line from `request.log` (level,
 * time, the logger's bindings, reqId, msg) and goes to the same destination, in
 * order with every other line.
 */
import pino, { type Logger } from 'pino'

/** One answered exchange: an HTTP request, or a WebSocket handshake. */
export interface Exchange {
  reqId: string
  method: string
  /** The request target as sent (the access line drops its query string). */
  url: string
  /** '' when none matched / none was chosen. */
  route: string
  upstream: string
  status: number
  /** The envelope code when the gateway itself answered with an error; 0 otherwise. */
  code: number
  /** performance.now() when it arrived. */
  startedAt: number
  /** The W3C trace id (http/trace-context.ts); '' when none was set. */
  traceId: string
  /** An untrusted client's own trace id, kept as a link (not forwarded). */
  linkedTraceId?: string | undefined
  /** It did not finish: the client left, or the upstream broke off mid-body. */
  aborted: boolean
  /** A WebSocket handshake. */
  websocket: boolean
  /** The client's protocol: 'h2', 'http/1.1' or 'http/1.0'. */
  proto: Proto
  /** The client connection is TLS (`listen.tls`); behind a terminating load balancer: false. */
  tls: boolean
}

export type Proto = 'h2' | 'http/1.1' | 'http/1.0'

/** The access line's protocol for Node's `httpVersion` ('2.0', '1.1', '1.0'). */
export function protoOf (httpVersion: string): Proto {
  return httpVersion === '2.0' ? 'h2' : httpVersion === '1.0' ? 'http/1.0' : 'http/1.1'
}

/** The path of a request target, without its query string (queries can carry secrets: never logged). */
export function pathOf (url: string): string {
  const q = url.indexOf('?')
  return q === -1 ? url : url.slice(0, q)
}

/** Write the line for `e`; `route` / `upstream` as labelled ('none' for none), `ms` its duration. */
export type AccessLog = (e: Exchange, route: string, upstream: string, ms: number) => void

interface Destination { write: (line: string) => unknown }

export function createAccessLog (logger: Logger): AccessLog {
  const stream = (logger as unknown as Record<symbol, Destination>)[pino.symbols.streamSym]
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? ''
  const level = pino.levels.values.info
  // One ISO timestamp per millisecond, however many lines share it.
  let lastMs = 0
  let lastIso = ''
  return (e, route, upstream, ms) => {
    if (!logger.isLevelEnabled('info')) return
    const now = Date.now()
    if (now !== lastMs) {
      lastMs = now
      lastIso = new Date(now).toISOString()
    }
    stream.write(`{"level":${level},"time":"${lastIso}"${bindings},"reqId":"${e.reqId}"${e.traceId === '' ? '' : `,"traceId":"${e.traceId}"`}${e.linkedTraceId === undefined ? '' : `,"linkedTraceId":"${e.linkedTraceId}"`},"method":"${e.method}","path":${JSON.stringify(pathOf(e.url))},"route":"${route}","upstream":"${upstream}","status":${e.status}${e.code !== 0 ? `,"code":${e.code}` : ''},"ms":${Math.round(ms * 100) / 100},"proto":"${e.proto}"${e.tls ? ',"tls":true' : ''}${e.aborted ? ',"aborted":true' : ''}${e.websocket ? ',"websocket":true' : ''},"msg":"access"}\n`)
  }
}
