/**
 * Strict-Transport-Security (`listen.tls.hsts`): on every response the gateway
 * sends over its TLS listener — its own answers and proxied ones (it replaces an
 * upstream's, as every header the gateway sets does). Never over plain http
 * (browsers ignore it there, RFC 6797 §8.1). Read from the snapshot: a reload
 * changes it; unset costs one property read per request.
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

export function registerHsts (app: FastifyInstance, config: () => GatewayConfig): void {
  app.addHook('onRequest', function hsts (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
    const h = config().listen.tls?.hsts
    // HTTP/1.1 over TLS and HTTP/2 (only ever offered over TLS here) both have an encrypted socket.
    if (h !== undefined && (request.raw.socket as { encrypted?: boolean } | null)?.encrypted === true) {
      reply.header('strict-transport-security', hstsValue(h))
    }
    done()
  })
}
