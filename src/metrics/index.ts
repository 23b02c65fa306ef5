/**
 * Every metric wegate exports, created on a registry the caller owns (never the
 * global one), so several gateways can live in one process (tests) and label
 * sets stay bounded: routes and upstreams come from config, never from requests.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** 1 ms … 10 s: a gateway's own cost is milliseconds, its upstreams' seconds. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

export type Metrics = ReturnType<typeof createMetrics>

export function createMetrics (registry: Registry = new Registry()) {
  collectDefaultMetrics({ register: registry })
  // Gauges named like counters: `promtool check metrics` rejects them, and the
  // per-type families (nodejs_active_resources{type}, …) carry the same numbers.
  for (const name of ['nodejs_active_resources_total', 'nodejs_active_handles_total', 'nodejs_active_requests_total']) {
    registry.removeSingleMetric(name)
  }
  const registers = [registry]
  return {
    registry,
    requests: new Counter({
      name: 'wegate_requests_total',
      help: 'Requests answered, by route (or "auth" / "none"), upstream, method and status class',
      labelNames: ['route', 'upstream', 'method', 'status_class'] as const,
      registers
    }),
    requestDuration: new Histogram({
      name: 'wegate_request_duration_seconds',
      help: 'Time from request received to response finished, as seen by the gateway',
      labelNames: ['route', 'upstream'] as const,
      buckets: LATENCY_BUCKETS,
      registers
    }),
    upstreamDuration: new Histogram({
      name: 'wegate_upstream_duration_seconds',
      help: 'Time from forwarding a request to the upstream\'s response headers',
      labelNames: ['route', 'upstream'] as const,
      buckets: LATENCY_BUCKETS,
      registers
    }),
    upstreamErrors: new Counter({
      name: 'wegate_upstream_errors_total',
      help: 'Forwarding failures by kind: timeout, refused, reset, client_abort, other',
      labelNames: ['route', 'upstream', 'kind'] as const,
      registers
    }),
    tokenRejections: new Counter({
      name: 'wegate_token_rejections_total',
      help: 'Requests refused by the token guard, by reason',
      labelNames: ['reason'] as const,
      registers
    }),
    logins: new Counter({
      name: 'wegate_logins_total',
      help: 'Logins by app, result (success|failure) and WeChat errcode (0 on success, none when WeChat gave none)',
      labelNames: ['app', 'result', 'errcode'] as const,
      registers
    }),
    refreshes: new Counter({
      name: 'wegate_refreshes_total',
      help: 'Refresh attempts by result: rotated, grace, reused, expired, invalid',
      labelNames: ['result'] as const,
      registers
    }),
    revocations: new Counter({
      name: 'wegate_revocations_total',
      help: 'Revocations by kind: token (one access token), family (one login), user (logout-all)',
      labelNames: ['kind'] as const,
      registers
    }),
    rateLimited: new Counter({
      name: 'wegate_rate_limited_total',
      help: 'Requests refused with 429, by route (auth_login for the login limit)',
      labelNames: ['route'] as const,
      registers
    }),
    upstreamWeight: new Gauge({
      name: 'wegate_upstream_weight',
      help: 'Effective weight of each upstream (the configured weight, 0 after an automatic rollback)',
      labelNames: ['route', 'upstream'] as const,
      // with several workers: a rollback on any of them shows at once
      aggregator: 'min',
      registers
    }),
    canaryRollbacks: new Counter({
      name: 'wegate_canary_rollbacks_total',
      help: 'Automatic canary rollbacks applied on this instance (decided here or announced by another instance)',
      labelNames: ['route', 'upstream'] as const,
      registers
    }),
    configReloads: new Counter({
      name: 'wegate_config_reloads_total',
      help: 'Config reloads by result: success, failure (refused; the last good config keeps serving)',
      labelNames: ['result'] as const,
      registers
    }),
    configLastSuccess: new Gauge({
      name: 'wegate_config_last_reload_success_timestamp_seconds',
      help: 'When the active config was loaded (Unix time)',
      aggregator: 'min',
      registers
    }),
    storeUp: new Gauge({
      name: 'wegate_store_up',
      help: '1 when the store is reachable and (Redis) the revocation mirror is synchronised',
      aggregator: 'min',
      registers
    }),
    storeStateLost: new Counter({
      name: 'wegate_store_state_lost_total',
      help: 'Times this instance found that Redis lost its state (restarted empty): tokens issued before were refused from then on',
      registers
    }),
    storeDuration: new Histogram({
      name: 'wegate_store_operation_duration_seconds',
      help: 'Store round trips by operation',
      labelNames: ['op'] as const,
      buckets: LATENCY_BUCKETS,
      registers
    }),
    websocketTunnels: new Gauge({ name: 'wegate_websocket_tunnels_open', help: 'WebSocket tunnels open right now, by route', labelNames: ['route'] as const, registers }),
    websocketClosed: new Counter({
      name: 'wegate_websocket_closed_total',
      help: 'WebSocket tunnels the gateway closed, by route and reason: revoked (token refused), expired, idle',
      labelNames: ['route', 'reason'] as const,
      registers
    }),
    tlsCertificateExpiry: new Gauge({
      name: 'wegate_tls_certificate_expiry_seconds',
      help: 'The public listener\'s TLS certificate (listen.tls): its notAfter as Unix time, by serial number (one series: the certificate served to new connections)',
      labelNames: ['serial'] as const,
      aggregator: 'min',
      registers
    }),
    configInfo: new Gauge({
      name: 'wegate_config_info',
      help: 'The active configuration: 1 for the hash of the file in use',
      labelNames: ['hash'] as const,
      aggregator: 'max',
      registers
    }),
    wechatCalls: new Counter({
      name: 'wegate_wechat_api_calls_total',
      help: 'Requests to WeChat\'s server API (each attempt) by api and result: the errcode (0 on success) or timeout, network, bad_response',
      labelNames: ['api', 'errcode'] as const,
      registers
    }),
    wechatTokenRefreshes: new Counter({
      name: 'wegate_wechat_token_refreshes_total',
      help: 'stable_token requests by app, reason (initial, scheduled, forced, backend), mode (normal, force) and result (success, failure)',
      labelNames: ['app', 'reason', 'mode', 'result'] as const,
      registers
    }),
    decrypts: new Counter({
      name: 'wegate_decrypts_total',
      help: '/auth/decrypt answers by app and result: ok, no_session, malformed, failed, wrong_app, too_old, signature, invalid',
      labelNames: ['app', 'result'] as const,
      registers
    }),
    phoneVerifications: new Counter({
      name: 'wegate_phone_verifications_total',
      help: '/auth/phone answers by app and result: ok, invalid_code, failure',
      labelNames: ['app', 'result'] as const,
      registers
    }),
    rolloutStep: new Gauge({ name: 'wegate_rollout_step', help: 'Automatic ramp: the current step (1-based), by route', labelNames: ['route'] as const, aggregator: 'max', registers }),
    rolloutShare: new Gauge({ name: 'wegate_rollout_share_percent', help: 'Automatic ramp: the canary\'s share of traffic (percent) this instance applies, by route', labelNames: ['route'] as const, aggregator: 'min', registers }),
    rolloutState: new Gauge({ name: 'wegate_rollout_state', help: 'Automatic ramp: 1 for the state the route\'s ramp is in (running, paused, aborted, promoted), else 0', labelNames: ['route', 'state'] as const, aggregator: 'max', registers }),
    rolloutDecisions: new Counter({ name: 'wegate_rollout_decisions_total', help: 'Automatic ramp: decisions and commands applied by this instance (start, advance, abort, promote, pause, resume)', labelNames: ['route', 'action'] as const, registers }),
    rolloutRequests: new Gauge({ name: 'wegate_rollout_step_requests', help: 'Automatic ramp: requests in the current step from every instance, by route and role (canary, stable), as last judged', labelNames: ['route', 'role'] as const, aggregator: 'max', registers }),
    rolloutErrors: new Gauge({ name: 'wegate_rollout_step_errors', help: 'Automatic ramp: errors in the current step from every instance, by route and role, as last judged', labelNames: ['route', 'role'] as const, aggregator: 'max', registers }),
    rolloutP99: new Gauge({ name: 'wegate_rollout_step_p99_seconds', help: 'Automatic ramp: p99 upstream latency (to response headers) in the current step, by route and role, as last judged', labelNames: ['route', 'role'] as const, aggregator: 'max', registers }),
    parserErrors: new Counter({
      name: 'wegate_http_parser_errors_total',
      help: 'Requests refused before routing (by Node\'s HTTP parser or the server), by reason: an llhttp / Node error code in lower case, missing_host, expectation, connect',
      labelNames: ['reason'] as const,
      registers
    })
  }
}
