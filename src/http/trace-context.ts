/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): every request gets a
 * trace id that the upstream (HTTP and WebSocket), the access line and 5xx
 * envelopes share.
 * - From a trusted peer (trustProxy) with a valid `traceparent`: the trace
 *   continues — same trace id and sampled flag, the gateway's own span id as the
 *   parent the upstream sees, `tracestate` passed on.
 * - From anyone else, or without a valid `traceparent`: a new trace (sampled).
 *   An untrusted client's valid trace id is not forwarded — it could join or
 *   flood the backends' traces — but kept as `linkedTraceId` on the access line,
 *   so a client's own trace can still be found; its `tracestate` is dropped.
 * Per request: one table-driven scan of the header, no regex; ids are hex slices
 * of a pooled buffer of random bytes refilled 4 KiB at a time.
 */
import { randomFillSync } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

export interface TraceContext {
  /** 32 lower-case hex digits. */
  traceId: string
  /** The gateway's span: the parent id the upstream receives. */
  spanId: string
  /** What goes upstream as `traceparent`. */
  traceparent: string
  /** What goes upstream as `tracestate` (a trusted peer's, unchanged). */
  tracestate: string | undefined
  /** An untrusted client's own trace id (not forwarded). */
  linkedTraceId: string | undefined
}

// 4 KiB of random bytes, hex-encoded once per refill; ids are slices of that string.
const POOL = Buffer.allocUnsafe(4096)
let poolHex = ''
let poolAt = POOL.length * 2

/** `bytes` random bytes as hex, from the pool. */
function randomHex (bytes: number): string {
  const chars = bytes * 2
  if (poolAt + chars > poolHex.length) {
    randomFillSync(POOL)
    poolHex = POOL.toString('hex')
    poolAt = 0
  }
  const hex = poolHex.slice(poolAt, poolAt + chars)
  poolAt += chars
  return hex
}

const ZERO_TRACE = '0'.repeat(32)
const ZERO_SPAN = '0'.repeat(16)

function newId (bytes: number, zero: string): string {
  let id = randomHex(bytes)
  while (id === zero) id = randomHex(bytes) // all zeros is invalid (probability 2^-64 or less)
  return id
}

// 1 for 0-9 a-f (lower case only, as the spec requires).
const HEX = new Uint8Array(128)
for (const c of '0123456789abcdef') HEX[c.charCodeAt(0)] = 1

function isHex (s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i)
    if (c > 127 || HEX[c] !== 1) return false
  }
  return true
}

/**
 * The trace id and flags of a valid `traceparent`, or undefined. Version 00 is
 * exactly 55 characters; a later version may append fields after a `-` (the
 * spec's forward compatibility); version ff and all-zero ids are invalid.
 */
export function parseTraceparent (value: string | string[] | undefined): { traceId: string, sampled: boolean } | undefined {
  if (typeof value !== 'string' || value.length < 55) return undefined
  const v = value
  if (v.charCodeAt(2) !== 0x2d || v.charCodeAt(35) !== 0x2d || v.charCodeAt(52) !== 0x2d) return undefined
  if (!isHex(v, 0, 2) || !isHex(v, 3, 35) || !isHex(v, 36, 52) || !isHex(v, 53, 55)) return undefined
  const version = v.slice(0, 2)
  if (version === 'ff') return undefined
  if (v.length > 55 && (version === '00' || v.charCodeAt(55) !== 0x2d)) return undefined
  const traceId = v.slice(3, 35)
  if (traceId === ZERO_TRACE || v.slice(36, 52) === ZERO_SPAN) return undefined
  const flags = hexValue(v.charCodeAt(54))
  return { traceId, sampled: (flags & 1) === 1 }
}

function hexValue (c: number): number {
  return c <= 0x39 ? c - 0x30 : c - 0x57
}

/** The trace context of a request whose socket peer is (or is not) a trusted proxy. */
export function traceContext (headers: IncomingHttpHeaders, peerTrusted: boolean): TraceContext {
  const given = parseTraceparent(headers.traceparent)
  const spanId = newId(8, ZERO_SPAN)
  if (given !== undefined && peerTrusted) {
    const state = headers.tracestate
    return {
      traceId: given.traceId,
      spanId,
      traceparent: `00-${given.traceId}-${spanId}-${given.sampled ? '01' : '00'}`,
      tracestate: state === undefined || state === '' ? undefined : Array.isArray(state) ? state.join(',') : state,
      linkedTraceId: undefined
    }
  }
  const traceId = newId(16, ZERO_TRACE)
  return { traceId, spanId, traceparent: `00-${traceId}-${spanId}-01`, tracestate: undefined, linkedTraceId: given?.traceId }
}
