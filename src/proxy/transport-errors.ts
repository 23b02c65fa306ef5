/**
 * Transport failures of an upstream request (HTTP or a WebSocket handshake),
 * classified once for the metrics and the 502 / 504 decision.
 */
import { errors as undiciErrors } from 'undici'

export type UpstreamErrorKind = 'timeout' | 'refused' | 'reset' | 'client_abort' | 'other'

/** Classify a transport failure for metrics and the 502/504 decision. */
export function errorKind (err: unknown): UpstreamErrorKind {
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError) return 'timeout'
  if (err instanceof undiciErrors.RequestAbortedError) return 'client_abort'
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code
  if (code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') return 'refused'
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET' || code === 'UND_ERR_CLOSED') return 'reset'
  if (code === 'ERR_STREAM_PREMATURE_CLOSE') return 'client_abort'
  return 'other'
}
