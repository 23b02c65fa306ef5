/**
 * Keep-alive connections to the upstreams: one undici Agent, which keeps one
 * Pool per origin (created on first use, shared by every snapshot that names
 * it), closed on app.close() once in-flight requests are done.
 */
import fp from 'fastify-plugin'
import { Agent, Pool, type Dispatcher } from 'undici'

declare module 'fastify' {
  interface FastifyInstance {
    /** Dispatches to any upstream origin (`origin` in the dispatch options). */
    upstreams: Dispatcher
  }
}

const POOL_OPTIONS: Pool.Options = {
  connections: 256,
  // 4 s: below Node's default 5 s server keep-alive, so we never reuse a socket the upstream is closing
  keepAliveTimeout: 4_000,
  keepAliveMaxTimeout: 60_000,
  connect: { timeout: 5_000 }
}

export const upstreamsPlugin = fp<{ connections?: number | undefined }>(async (app, opts) => {
  const pool = { ...POOL_OPTIONS, connections: opts.connections ?? POOL_OPTIONS.connections }
  const agent = new Agent({ factory: (origin, o) => new Pool(origin, { ...o, ...pool }) })
  app.decorate('upstreams', agent)
  app.addHook('onClose', async () => { await agent.close() })
}, { name: 'wegate-upstreams', fastify: '5.x' })
