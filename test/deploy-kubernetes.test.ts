/**
 * The Kubernetes manifests under deploy/kubernetes and the Dockerfile they run:
 * every object is valid against the Kubernetes API schema (offline, through
 * kubernetes-models), and the settings an SRE relies on hold together — probes
 * on the admin port, a drain that fits in the grace period, a ConfigMap mount
 * that can hot-reload, secrets that exist, a config the gateway accepts.
 */
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs'
import { dirname, join, relative, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { parseAllDocuments } from 'yaml'
import { Deployment, type IDeployment } from 'kubernetes-models/apps/v1/Deployment'
import { StatefulSet } from 'kubernetes-models/apps/v1/StatefulSet'
import { HorizontalPodAutoscaler, type IHorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler'
import { PodDisruptionBudget, type IPodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { ConfigMap, type IConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { Secret, type ISecret } from 'kubernetes-models/v1/Secret'
import { Service, type IService } from 'kubernetes-models/v1/Service'
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount'
import { parseConfig } from '../src/config/load.js'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const k8sDir = join(root, 'deploy/kubernetes')

interface K8sObject { apiVersion: string, kind: string, metadata?: { name?: string } }
interface Kustomization { resources?: string[], images?: Array<{ name: string }> }
interface Manifest { file: string, obj: K8sObject }

/** Every model the manifests may use: a new kind must be added here to be validated. */
const models: Record<string, (obj: K8sObject) => { validate: () => void }> = {
  'apps/v1/Deployment': (o) => new Deployment(o as IDeployment),
  'apps/v1/StatefulSet': (o) => new StatefulSet(o as ConstructorParameters<typeof StatefulSet>[0]),
  'autoscaling/v2/HorizontalPodAutoscaler': (o) => new HorizontalPodAutoscaler(o as IHorizontalPodAutoscaler),
  'policy/v1/PodDisruptionBudget': (o) => new PodDisruptionBudget(o as IPodDisruptionBudget),
  'v1/ConfigMap': (o) => new ConfigMap(o as IConfigMap),
  'v1/Secret': (o) => new Secret(o as ISecret),
  'v1/Service': (o) => new Service(o as IService),
  'v1/ServiceAccount': (o) => new ServiceAccount(o as ConstructorParameters<typeof ServiceAccount>[0])
}

function yamlFiles (dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) return yamlFiles(p)
    return /\.ya?ml$/.test(name) ? [p] : []
  })
}

function parseDocs (file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${relative(root, file)}: ${doc.errors[0].message}`)
    return doc.toJS() as unknown
  }).filter((d) => d !== null && d !== undefined)
}

const files = yamlFiles(k8sDir)
const kustomizations = files.filter((f) => /kustomization\.ya?ml$/.test(f))
const manifests: Manifest[] = files.filter((f) => !kustomizations.includes(f))
  .flatMap((file) => parseDocs(file).map((obj) => ({ file, obj: obj as K8sObject })))

function one<T> (kind: string, name: string): T {
  const found = manifests.filter((m) => m.obj.kind === kind && m.obj.metadata?.name === name)
  if (found.length !== 1) throw new Error(`expected exactly one ${kind}/${name}, found ${found.length}`)
  return found[0].obj as T
}

const deployment = one<IDeployment>('Deployment', 'wegate')
const podSpec = deployment.spec!.template.spec!
const container = podSpec.containers.find((c) => c.name === 'wegate')!
const configMap = one<IConfigMap>('ConfigMap', 'wegate-config')
const secret = one<ISecret>('Secret', 'wegate-secrets')
const configText = configMap.data?.['gateway.yaml'] ?? ''

/** The env the gateway would see: the Secret example's values behind the Deployment's env. */
function podEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    const ref = e.valueFrom?.secretKeyRef
    if (ref !== undefined && ref.name === secret.metadata?.name) env[e.name] = secret.stringData?.[ref.key]
  }
  return env
}

const gatewayConfig = parseConfig(configText, podEnv(), 'configmap gateway.yaml')

function portNumber (port: number | string | undefined): number | undefined {
  if (typeof port === 'number') return port
  return container.ports?.find((p) => p.name === port)?.containerPort
}

t.test('every manifest is a valid Kubernetes object (offline API schema)', async (t) => {
  t.ok(manifests.length >= 8, `found ${manifests.length} objects`)
  for (const { file, obj } of manifests) {
    const key = `${obj.apiVersion}/${obj.kind}`
    const model = models[key]
    t.ok(model, `${relative(root, file)}: ${key} is a known model`)
    if (model === undefined) continue
    t.doesNotThrow(() => model(obj).validate(), `${relative(root, file)}: ${obj.kind}/${obj.metadata?.name ?? '?'} validates`)
  }
})

t.test('the schema check catches a broken object', async (t) => {
  const broken = structuredClone(deployment) as unknown as { spec: { replicas: unknown } }
  broken.spec.replicas = 'two'
  t.throws(() => models['apps/v1/Deployment'](broken as unknown as K8sObject).validate())
})

t.test('kustomizations list existing files and cover every manifest', async (t) => {
  const listed = new Set<string>()
  for (const k of kustomizations) {
    const doc = parseDocs(k)[0] as Kustomization
    for (const r of doc.resources ?? []) {
      const p = resolve(dirname(k), r)
      t.ok(existsSync(p), `${relative(root, k)}: resource ${r} exists`)
      // kustomize refuses files outside the kustomization's own tree (directories are fine)
      if (!statSync(p).isDirectory()) t.notOk(relative(dirname(k), p).startsWith('..'), `${r} is inside ${relative(root, dirname(k))}`)
      listed.add(p)
    }
  }
  for (const f of files.filter((f) => !kustomizations.includes(f))) {
    t.ok(listed.has(f), `${relative(root, f)} is applied by some kustomization`)
  }
  const base = parseDocs(join(k8sDir, 'kustomization.yaml'))[0] as Kustomization
  t.notOk(base.resources?.some((r) => /secret|redis/i.test(r)), 'the production base applies neither placeholder secrets nor the try-out Redis')
  t.ok(base.images?.some((i) => i.name === container.image?.split(':')[0]), 'the image can be retargeted with kustomize images:')
})

t.test('deployment keeps capacity through rollouts', async (t) => {
  t.ok((deployment.spec?.replicas ?? 1) >= 2, 'replicas >= 2')
  t.equal(deployment.spec?.strategy?.type, 'RollingUpdate')
  t.equal(deployment.spec?.strategy?.rollingUpdate?.maxUnavailable, 0, 'maxUnavailable 0')
  t.ok((podSpec.topologySpreadConstraints?.length ?? 0) > 0 || podSpec.affinity?.podAntiAffinity !== undefined, 'pods spread over nodes')
  const labels = deployment.spec?.template.metadata?.labels ?? {}
  for (const [k, v] of Object.entries(deployment.spec?.selector.matchLabels ?? {})) t.equal(labels[k], v, `template carries selector label ${k}`)
})

t.test('probes hit the admin port: /readyz for readiness, /healthz for liveness', async (t) => {
  const adminPort = gatewayConfig.admin.port
  t.equal(adminPort, 9091)
  t.equal(gatewayConfig.admin.host, '0.0.0.0', 'admin listens beyond loopback so the kubelet reaches it')
  t.equal(container.readinessProbe?.httpGet?.path, '/readyz')
  t.equal(portNumber(container.readinessProbe?.httpGet?.port), adminPort)
  t.equal(container.livenessProbe?.httpGet?.path, '/healthz', 'liveness does not depend on Redis')
  t.equal(portNumber(container.livenessProbe?.httpGet?.port), adminPort)
  if (container.startupProbe !== undefined) t.equal(portNumber(container.startupProbe.httpGet?.port), adminPort)
  t.equal(portNumber('http'), gatewayConfig.listen.port, 'the http container port is the gateway listen port')
  const ann = deployment.spec?.template.metadata?.annotations ?? {}
  t.equal(ann['prometheus.io/scrape'], 'true')
  t.equal(Number(ann['prometheus.io/port']), adminPort, 'Prometheus scrapes the admin port')
  t.equal(ann['prometheus.io/path'], '/metrics')
})

t.test('termination grace period covers preStop + shutdown.delay + shutdown.timeout', async (t) => {
  const cmd = container.lifecycle?.preStop?.exec?.command?.join(' ') ?? ''
  const sleepAction = container.lifecycle?.preStop?.sleep?.seconds
  const m = /setTimeout\([^,]+,\s*(\d+)\)/.exec(cmd) ?? /^sleep (\d+)$/.exec(cmd)
  const preStopS = sleepAction ?? (m === null ? NaN : (/setTimeout/.test(cmd) ? Number(m[1]) / 1000 : Number(m[1])))
  t.ok(preStopS >= 3, `preStop waits a few seconds for endpoint removal (${preStopS} s)`)
  const { delay, timeout } = gatewayConfig.shutdown
  t.ok(delay > 0, 'shutdown.delay is set')
  const grace = podSpec.terminationGracePeriodSeconds ?? 30
  t.ok(grace > preStopS + (delay + timeout) / 1000, `grace ${grace} s > preStop ${preStopS} s + delay ${delay / 1000} s + timeout ${timeout / 1000} s`)
})

t.test('config comes from the ConfigMap as a directory mount (hot reload), not subPath', async (t) => {
  const mount = container.volumeMounts?.find((v) => v.mountPath === '/etc/wegate')
  t.ok(mount, 'something is mounted at /etc/wegate')
  t.equal(mount?.subPath, undefined, 'no subPath: a subPath mount never receives ConfigMap updates')
  t.equal(mount?.subPathExpr, undefined)
  const volume = podSpec.volumes?.find((v) => v.name === mount?.name)
  t.equal(volume?.configMap?.name, configMap.metadata?.name, 'the mount is the wegate-config ConfigMap')
  t.notOk(volume?.configMap?.items?.some((i) => i.path !== 'gateway.yaml'), 'gateway.yaml keeps its name')
  t.ok(container.command?.includes('/etc/wegate/gateway.yaml'), 'the process reads /etc/wegate/gateway.yaml')
  t.ok('gateway.yaml' in (configMap.data ?? {}))
})

t.test('runs locked down: non-root, read-only root, no capabilities, seccomp, resources', async (t) => {
  const psc = podSpec.securityContext
  const csc = container.securityContext
  t.equal(psc?.runAsNonRoot, true)
  t.not(psc?.runAsUser, 0)
  t.equal(psc?.seccompProfile?.type ?? csc?.seccompProfile?.type, 'RuntimeDefault')
  t.equal(csc?.readOnlyRootFilesystem, true)
  t.equal(csc?.allowPrivilegeEscalation, false)
  t.same(csc?.capabilities?.drop, ['ALL'])
  t.equal(podSpec.automountServiceAccountToken, false, 'no API token: the gateway never calls the API server')
  for (const r of ['cpu', 'memory']) t.ok(container.resources?.requests?.[r], `requests.${r}`)
  t.ok(container.resources?.limits?.memory, 'limits.memory')
})

t.test('the ConfigMap gateway.yaml passes the gateway\'s own validator for production', async (t) => {
  t.equal(gatewayConfig.store.type, 'redis', 'replicas share one Redis store')
  t.equal(gatewayConfig.store.url, secret.stringData?.REDIS_URL, 'store url comes from the Secret')
  t.equal(gatewayConfig.tokens.keys[0].secret, secret.stringData?.JWT_SECRET, 'signing key comes from the Secret')
  t.equal(gatewayConfig.wechat.apps[0].secret, secret.stringData?.WX_SECRET)
  t.ok(gatewayConfig.routes.length >= 2, 'two example routes')
  t.ok(gatewayConfig.routes.some((r) => r.upstreams.length > 1 && r.canary?.rollback !== undefined), 'one route runs a canary with rollback')
  t.notMatch(configText, /CHANGE-ME/, 'no secret values in the ConfigMap')
  // Without the Secret the gateway must refuse to start, not run with empty secrets.
  t.throws(() => parseConfig(configText, {}, 'gateway.yaml'), /JWT_SECRET is not set/)
})

t.test('every secret the Deployment references exists in the Secret example', async (t) => {
  const refs = (container.env ?? []).flatMap((e) => e.valueFrom?.secretKeyRef === undefined ? [] : [e.valueFrom.secretKeyRef])
  refs.push(...(container.envFrom ?? []).flatMap((e) => e.secretRef === undefined ? [] : [{ name: e.secretRef.name, key: '' }]))
  t.ok(refs.length >= 3)
  for (const ref of refs) {
    t.equal(ref.name, secret.metadata?.name, `secret ${ref.name} is the example's`)
    if (ref.key !== '') t.ok(ref.key in (secret.stringData ?? secret.data ?? {}), `key ${ref.key} exists in the Secret example`)
  }
  // Every ${VAR} the config needs without a default is set in the pod.
  const env = podEnv()
  for (const m of configText.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)) t.ok(env[m[1]], `\${${m[1]}} is provided by the Deployment env`)
  t.ok((secret.stringData?.JWT_SECRET ?? '').length >= 32, 'the example JWT secret is long enough for HS256')
})

t.test('services, HPA and PDB select the gateway pods', async (t) => {
  const labels = deployment.spec?.template.metadata?.labels ?? {}
  const matches = (sel: Record<string, string> | undefined) => sel !== undefined && Object.entries(sel).every(([k, v]) => labels[k] === v)
  const svc = one<IService>('Service', 'wegate')
  t.equal(svc.spec?.type ?? 'ClusterIP', 'ClusterIP')
  t.ok(matches(svc.spec?.selector), 'public Service selects the pods')
  t.same(svc.spec?.ports?.map((p) => [p.port, portNumber(p.targetPort)]), [[80, 8080]], 'public Service exposes only 80 -> 8080')
  const admin = one<IService>('Service', 'wegate-admin')
  t.ok(matches(admin.spec?.selector))
  t.same(admin.spec?.ports?.map((p) => portNumber(p.targetPort)), [9091])
  const hpa = one<IHorizontalPodAutoscaler>('HorizontalPodAutoscaler', 'wegate')
  t.same(hpa.spec?.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'wegate' })
  t.ok(hpa.spec?.metrics?.some((m) => m.resource?.name === 'cpu'), 'scales on CPU')
  const pdb = one<IPodDisruptionBudget>('PodDisruptionBudget', 'wegate')
  t.ok(matches(pdb.spec?.selector?.matchLabels))
  t.equal(pdb.spec?.minAvailable, 1)
  t.ok((hpa.spec?.minReplicas ?? 1) > 1, 'HPA never scales below 2, or the PDB would block node drains')
})

t.test('the try-out Redis is clearly marked as not for production', async (t) => {
  const redisFile = manifests.find((m) => m.obj.kind === 'StatefulSet')?.file ?? ''
  t.match(readFileSync(redisFile, 'utf8'), /FOR TRYING OUT/)
  t.match(readFileSync(redisFile, 'utf8'), /managed Redis/)
  t.match(readFileSync(manifests.find((m) => m.obj.kind === 'Secret')!.file, 'utf8'), /EXAMPLE ONLY/)
})

t.test('Dockerfile: the image the manifests run', async (t) => {
  const text = readFileSync(join(root, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ')
  const lines = text.split('\n').filter((l) => !/^\s*#/.test(l))
  const stages = lines.filter((l) => /^FROM /i.test(l))
  t.ok(stages.length >= 2, 'multi-stage build')
  const runtime = lines.slice(lines.lastIndexOf(stages[stages.length - 1]))
  const cmd = runtime.find((l) => /^CMD /.test(l))
  t.ok(cmd, 'CMD set')
  t.same(JSON.parse(cmd!.slice(4)), container.command, 'exec-form CMD (node is PID 1) equals the Deployment command')
  const user = runtime.filter((l) => /^USER /.test(l)).pop()?.slice(5).trim()
  t.ok(user === 'node' || user === '1000', `runs as the node user (uid ${String(podSpec.securityContext?.runAsUser)}), got ${user}`)
  t.ok(runtime.some((l) => /^EXPOSE\s+8080\s+9091\s*$/.test(l)), 'EXPOSE 8080 9091')
  t.ok(runtime.some((l) => /^HEALTHCHECK .*\/healthz/.test(l)), 'HEALTHCHECK on /healthz')
  t.ok(runtime.some((l) => /npm ci --omit=dev|--from=deps/.test(l)), 'production dependencies only')
  // Every COPY from the build context names a file that exists (docker cannot run here).
  for (const l of lines.filter((l) => /^COPY /.test(l) && !/--from=/.test(l))) {
    const args = l.slice(5).trim().split(/\s+/).filter((a) => !a.startsWith('--'))
    for (const src of args.slice(0, -1)) if (src !== '.') t.ok(existsSync(join(root, src)), `COPY source ${src} exists`)
  }
  const ignore = readFileSync(join(root, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim())
  for (const p of ['node_modules', 'dist', '.git', 'test', '.tap']) t.ok(ignore.includes(p), `.dockerignore excludes ${p}`)
})
