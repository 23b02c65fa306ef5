/**
 * The request pipeline, written once for HTTP forwarding (forward.ts) and
 * WebSocket handshakes (websocket.ts): normalise the path, match a route,
 * authenticate per the route's mode, count the route's rate limit, pick the
 * upstream and build its request headers. What happens next (stream a body,
 * replay a handshake) is the caller's.
 *
 * Synchronous unless the route has a rate limit (a store round trip): the
 * common case costs no promise. Refusals are thrown (rejected) as GatewayError.
 */
import type { IncomingHttpHeaders } from 'node:http'
import { GatewayError } from '../errors.js'
import type { TraceContext } from '../http/trace-context.js'
import type { RouteLimiter } from '../http/ratelimit.js'
import { upstreamRequestHeaders } from './headers.js'
import { normalisePath } from './path.js'
import type { CompiledRoute, CompiledUpstream } from './routes.js'
import type { Caller, ProxySnapshot } from './types.js'

/** What the pipeline reads from a request (a FastifyRequest is one; a handshake builds one). */
export interface PipelineInput {
  readonly url: string
  readonly headers: IncomingHttpHeaders
  /** The client IP per trustProxy. */
  readonly ip: string
  /** The request id (sent upstream as X-Request-Id). */
  readonly id: string
  /** The W3C trace context (sent upstream as traceparent / tracestate). */
  readonly trace: TraceContext | null
  /** `encrypted`: the client connected over TLS (X-Forwarded-Proto https). */
  readonly socket: { readonly remoteAddress?: string | undefined, readonly encrypted?: boolean | undefined }
  /** Set as soon as a route matched, for the access line (a later refusal names the route too). */
  routeName: string
}

export interface Resolved {
  route: CompiledRoute
  /** The verified caller; undefined on public routes and for anonymous callers on optional ones. */
  caller: Caller | undefined
  upstream: CompiledUpstream
  /** Path and query string to request from the upstream. */
  path: string
  upstreamHeaders: Record<string, string | string[]>
  /** RateLimit-* headers for the answer; undefined when the route has no rate limit. */
  rateHeaders: Record<string, string> | undefined
}

export interface Pipeline {
  snapshot: () => ProxySnapshot
  /** Is this socket peer a trusted proxy (trustProxy)? */
  trusted: (address: string) => boolean
  /** The per-route limiter (same counters for HTTP requests and upgrades); routes with `rateLimit` only. */
  rateLimit?: RouteLimiter | undefined
  /** The caller's verified number (`+8613800138000`), read for `injectPhone` routes only. */
  phoneOf?: PhoneLookup | undefined
}

/** The verified phone number of (appId, openid) for X-Phone-Number; undefined when none. */
export type PhoneLookup = (appId: string, openid: string) => Promise<string | undefined>

/** Resolve a request to its route, caller, upstream and upstream headers; throws / rejects with GatewayError. */
export function resolve (p: Pipeline, input: PipelineInput): Resolved | Promise<Resolved> {
  const snap = p.snapshot()
  const target = normalisePath(input.url)
  if (!target.ok) throw new GatewayError('BAD_PATH', { detail: `path rejected: ${target.reason}` })
  const route = snap.routes.match(target.path)
  if (route === undefined) throw new GatewayError('NO_ROUTE')
  input.routeName = route.name
  const caller = route.auth === 'public' ? undefined : snap.authenticate(input.headers.authorization, route.auth === 'required')
  const rule = route.config.rateLimit
  const limited = rule === undefined || p.rateLimit === undefined
    ? undefined
    : p.rateLimit({ routeName: route.name, rateRule: rule, callerOpenid: caller?.openid ?? '', ip: input.ip })
  // A store read only on routes that asked for the number, and only for a verified caller.
  const phone = route.config.injectPhone && caller !== undefined && p.phoneOf !== undefined ? p.phoneOf(caller.appid, caller.openid) : undefined
  const channel = caller === undefined ? undefined : snap.apps?.get(caller.appid)?.type ?? 'miniprogram'
  if (limited === undefined && phone === undefined) return plan(p, input, route, caller, target, undefined, undefined, channel)
  return Promise.all([limited, phone]).then(([rateHeaders, number]) => plan(p, input, route, caller, target, rateHeaders, number, channel))
}

function plan (
  p: Pipeline, input: PipelineInput, route: CompiledRoute, caller: Caller | undefined,
  target: { path: string, query: string }, rateHeaders: Record<string, string> | undefined, phone: string | undefined,
  channel: string | undefined
): Resolved {
  const upstream = pickUpstream(route, caller, input.ip, input.headers)
  const remote = input.socket.remoteAddress ?? ''
  const upstreamHeaders = upstreamRequestHeaders(input.headers, {
    remoteAddress: remote,
    remoteTrusted: p.trusted(remote),
    secure: input.socket.encrypted === true,
    requestId: input.id,
    trace: input.trace ?? undefined,
    upstreamHost: upstream.host,
    forwardAuthorization: route.config.forwardAuthorization,
    identity: caller,
    channel,
    phone
  })
  return { route, caller, upstream, path: route.upstreamPath(target.path, upstream) + target.query, upstreamHeaders, rateHeaders }
}

/** The upstream for this caller: tester header override, tester openids, sticky weighted split. */
export function pickUpstream (route: CompiledRoute, caller: Caller | undefined, ip: string, headers: IncomingHttpHeaders): CompiledUpstream {
  const picker = route.picker
  const headerName = picker.headerName
  const forced = headerName === undefined ? undefined : headers[headerName]
  return route.upstreams[picker.pick({
    openid: caller?.openid,
    ip,
    headerValue: typeof forced === 'string' ? forced : undefined
  })]
}
