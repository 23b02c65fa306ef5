import t from 'tap'
import { request } from 'undici'
import { startGateway } from './helpers/gateway.js'

t.test('health, readiness and metrics live on the admin port only', async (t) => {
  const { url, adminUrl } = await startGateway(t)
  const health = await request(`${adminUrl}/healthz`)
  t.equal(health.statusCode, 200)
  t.same(await health.body.json(), { status: 'ok' })

  const ready = await request(`${adminUrl}/readyz`)
  t.equal(ready.statusCode, 200)
  t.match(await ready.body.json(), { ready: true, draining: false })

  // Generate one request so request metrics have a sample.
  await (await request(`${url}/nowhere`)).body.dump()
  const metrics = await request(`${adminUrl}/metrics`)
  t.equal(metrics.statusCode, 200)
  t.match(metrics.headers['content-type'], /text\/plain/)
  const text = await metrics.body.text()
  t.match(text, /^process_cpu_user_seconds_total /m, 'Node process metrics')
  t.match(text, /^wegate_config_info\{hash="[0-9a-f]{16}"\} 1$/m)
  t.match(text, /^wegate_requests_total\{route="none",upstream="none",method="GET",status_class="4xx"\} 1$/m)
  t.match(text, /^wegate_request_duration_seconds_bucket\{le="0\.001",route="none",upstream="none"\}/m)

  for (const path of ['/healthz', '/readyz', '/metrics']) {
    const res = await request(`${url}${path}`)
    t.equal(res.statusCode, 404, `${path} is not on the public port`)
    await res.body.dump()
  }
})

t.test('two gateways in one process keep separate registries', async (t) => {
  const a = await startGateway(t)
  const b = await startGateway(t)
  await (await request(`${a.url}/x`)).body.dump()
  await (await request(`${a.url}/x`)).body.dump()
  const textB = await (await request(`${b.adminUrl}/metrics`)).body.text()
  t.notMatch(textB, /wegate_requests_total\{/, 'b saw no requests')
  const textA = await (await request(`${a.adminUrl}/metrics`)).body.text()
  t.match(textA, /wegate_requests_total\{[^}]*\} 2$/m)
})
