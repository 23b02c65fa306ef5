/**
 * The types the proxy shares with the rest of the gateway (the snapshot that
 * feeds it, canary tracking): declared here, so that importing them pulls in
 * no forwarding code.
 */
import type { RouteTable } from './routes.js'
import type { TunnelLimits } from './tunnels.js'

/** Who the caller is, from a verified, unrevoked access token. */
export interface Caller {
  openid: string
  unionid?: string | undefined
  appid: string
  /** The token's expiry (epoch seconds): a WebSocket tunnel it opened closes then. */
  exp?: number | undefined
}

/**
 * Turn an Authorization header into a Caller. Returns undefined only when no
 * credentials were sent and `required` is false; throws GatewayError (TOKEN_*)
 * otherwise.
 */
export type Authenticate = (authorization: string | undefined, required: boolean) => Caller | undefined

/** What the proxy needs from the current config snapshot. */
export interface ProxySnapshot {
  readonly routes: RouteTable
  readonly authenticate: Authenticate
  readonly config: { readonly websocket: TunnelLimits }
  /** wechat.apps by appId: the caller's app type is sent upstream as X-WeGate-Channel (docs/channels.md). */
  readonly apps?: ReadonlyMap<string, { readonly type?: string | undefined }>
}

/** Outcome of one forwarded request or handshake, for rollback tracking and metrics. */
export type UpstreamOutcome = 'ok' | 'error'
