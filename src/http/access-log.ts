/**
 * The access line, one per request. It is the one log line every request pays
 * for, so it is assembled directly instead of through pino's generic path
 * (object walk, redaction scan, a Date per line): the fields are fixed and known
 * to be safe — the path has no query string, names come from the config, the
 * request id is ours or matched a strict pattern — and only the path needs JSON
 * escaping. The line has the same shape as a pino line from `request.log` (level,
 * time, the logger's bindings, reqId, msg) and goes to the same destination, in
 * order with every other line.
 */
import pino, { type Logger } from 'pino'

export interface AccessEntry {
  reqId: string
  method: string
  /** Without the query string (queries can carry secrets). */
  path: string
  route: string
  upstream: string
  status: number
  /** The envelope code when the gateway itself answered with an error; 0 otherwise. */
  code: number
  ms: number
  /** The response did not finish: the client left, or the upstream broke off mid-body. */
  aborted: boolean
}

export type AccessLog = (entry: AccessEntry) => void

interface Destination { write: (line: string) => unknown }

export function createAccessLog (logger: Logger): AccessLog {
  const stream = (logger as unknown as Record<symbol, Destination>)[pino.symbols.streamSym]
  const bindings = (logger as unknown as Record<symbol, string>)[pino.symbols.chindingsSym] ?? ''
  const level = pino.levels.values.info
  // One ISO timestamp per millisecond, however many lines share it.
  let lastMs = 0
  let lastIso = ''
  return (e) => {
    if (!logger.isLevelEnabled('info')) return
    const now = Date.now()
    if (now !== lastMs) {
      lastMs = now
      lastIso = new Date(now).toISOString()
    }
    stream.write(`{"level":${level},"time":"${lastIso}"${bindings},"reqId":"${e.reqId}","method":"${e.method}","path":${JSON.stringify(e.path)},"route":"${e.route}","upstream":"${e.upstream}","status":${e.status}${e.code !== 0 ? `,"code":${e.code}` : ''},"ms":${Math.round(e.ms * 100) / 100}${e.aborted ? ',"aborted":true' : ''},"msg":"access"}\n`)
  }
}
