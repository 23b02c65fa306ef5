/**
 * Strict-Transport-Security (`listen.tls.hsts`): on every response the gateway
 * sends over its TLS listener — its own answers and proxied ones (it replaces an
 * upstream's, as every header the gateway sets does). Never over plain http
 * (browsers ignore it there, RFC 6797 §8.1). Read from the snapshot: a reload
 * changes it; unset costs one property read per request on a TLS listener, nothing on plain http.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../config/schema.js'

type Hsts = NonNullable<NonNullable<GatewayConfig['listen']['tls']>['hsts']>
const values = new WeakMap<Hsts, string>()

/** The header value for a setting, built once per loaded config. */
export function hstsValue (h: Hsts): string {
  let v = values.get(h)
  if (v === undefined) {
    v = `max-age=${Math.floor(h.maxAge / 1000)}${h.includeSubDomains ? '; includeSubDomains' : ''}`
    values.set(h, v)
  }
  return v
}

/**
 * On a TLS listener only (turning TLS on or off is restart-only): every connection it
 * accepts is TLS — HTTP/1.1 over TLS, or HTTP/2 — so a plain-http gateway pays no hook at
 * all, and the TLS one no per-request socket check.
 */
export function registerHsts (app: FastifyInstance, tlsListener: boolean, config: () => GatewayConfig): void {
  if (!tlsListener) return
  app.addHook('onRequest', function hsts (_request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const h = config().listen.tls?.hsts
    if (h !== undefined) reply.header('strict-transport-security', hstsValue(h))
    done()
  })
}
