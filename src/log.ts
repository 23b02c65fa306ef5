/**
 * The process logger. pino writes NDJSON; anything that could hold a credential
 * is redacted at the serializer level, so a careless `log.info({ body })` cannot
 * leak a token, a secret or a session_key.
 */
import pino, { type DestinationStream, type Logger } from 'pino'

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers.cookie',
  'headers.authorization',
  '*.authorization',
  '*.accessToken',
  '*.refreshToken',
  '*.token',
  '*.secret',
  '*.sessionKey',
  '*.session_key',
  'accessToken',
  'refreshToken',
  'token',
  'secret',
  'sessionKey',
  'session_key'
]

export interface LoggerOptions {
  level?: string
  /** Where lines go (default stdout); tests pass a stream to read them. */
  destination?: DestinationStream
}

export function createLogger (opts: LoggerOptions = {}): Logger {
  return pino({
    level: opts.level ?? 'info',
    base: { service: 'wegate' },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' }
  }, opts.destination ?? pino.destination({ sync: false }))
}
