// Scenario C of the benchmark: the Node reference. A bare Fastify with
// @fastify/http-proxy forwarding everything to one upstream, no auth, no logging,
// no metrics: what a team would write before adding any of wegate's work.
// usage: node test/bench/bare-proxy.mjs <port> <upstream-url>
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'

const [port, upstream] = process.argv.slice(2)
const app = Fastify({ logger: false })
await app.register(proxy, { upstream, undici: { connections: 256, pipelining: 1, keepAliveTimeout: 60_000 } })
await app.listen({ host: '127.0.0.1', port: Number(port) })
process.stdout.write('listening\n')
process.on('SIGTERM', () => { app.close().then(() => process.exit(0)) })
