/**
 * The Kubernetes manifests under deploy/kubernetes and the Dockerfile they run.
 * Every kustomization (the production base and each overlay) is built the way an
 * SRE applies it, with `kubectl kustomize`; on what that renders, every object is
 * valid against the Kubernetes API schema (offline, through kubernetes-models),
 * and the settings an SRE relies on hold together — probes on the admin port, a
 * drain that fits in the grace period, a ConfigMap mount that can hot-reload,
 * secrets that exist, a config the gateway accepts.
 */
import { spawnSync } from 'node:child_process'
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
const baseDir = join(k8sDir, 'base')
const tryOutDir = join(k8sDir, 'overlays/try-out')
const KUBECTL_HINT = 'kubectl (with kustomize v5) not found: install it from the Kubernetes apt repository ' +
  '(https://pkgs.k8s.io/core:/stable:/v1.32/deb/, package `kubectl`) or as a static binary (https://dl.k8s.io/release/v1.32.4/bin/linux/amd64/kubectl)'

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

function parseDocs (text: string, source: string): unknown[] {
  return parseAllDocuments(text).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`${source}: ${doc.errors[0].message}`)
    return doc.toJS() as unknown
  }).filter((d) => d !== null && d !== undefined)
}

/** `kubectl kustomize <dir>`: what `kubectl apply -k <dir>` would send to the API server. */
function kustomize (dir: string): { status: number | null, output: string, objects: K8sObject[] } {
  const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 60_000 })
  if (r.error !== undefined && (r.error as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(KUBECTL_HINT)
  const objects = r.status === 0 ? parseDocs(r.stdout, `kubectl kustomize ${relative(root, dir)}`) as K8sObject[] : []
  return { status: r.status, output: `${r.stdout}${r.stderr}`, objects }
}

const files = yamlFiles(k8sDir)
const kustomizations = files.filter((f) => /kustomization\.ya?ml$/.test(f))
const sources: Manifest[] = files.filter((f) => !kustomizations.includes(f))
  .flatMap((file) => parseDocs(readFileSync(file, 'utf8'), relative(root, file)).map((obj) => ({ file, obj: obj as K8sObject })))
const builds = new Map(kustomizations.map((k) => [dirname(k), kustomize(dirname(k))]))
const keyOf = (o: K8sObject): string => `${o.kind}/${o.metadata?.name ?? '?'}`
/** The invariants below run on the try-out overlay's render: the base plus the Secret example and Redis. */
const rendered: K8sObject[] = builds.get(tryOutDir)?.objects ?? []

function one<T> (kind: string, name: string, objects: K8sObject[] = rendered): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata?.name === name)
  if (found.length !== 1) throw new Error(`expected exactly one ${kind}/${name}, found ${found.length}`)
  return found[0] as T
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

t.test('kubectl with kustomize v5 is installed', async (t) => {
  const r = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' })
  t.equal(r.error, undefined, KUBECTL_HINT)
  t.match(r.stdout, /Kustomize Version: v5\./, 'kustomize v5 (kubectl >= 1.27)')
})

t.test('every kustomization builds with kubectl kustomize (as `kubectl apply -k` would)', async (t) => {
  t.same([...builds.keys()].map((d) => relative(k8sDir, d)).sort(), ['base', 'overlays/try-out'])
  for (const [dir, b] of builds) {
    t.equal(b.status, 0, `kubectl kustomize ${relative(root, dir)}: ${b.output.slice(0, 500)}`)
    t.ok(b.objects.length >= 7, `${relative(root, dir)} renders ${b.objects.length} objects`)
  }
  // No kustomization inside another one's tree: kustomize refuses an overlay inside its base ("cycle detected").
  for (const a of builds.keys()) {
    for (const b of builds.keys()) if (a !== b) t.ok(relative(a, b).startsWith('..'), `${relative(root, b)} is not inside ${relative(root, a)}`)
  }
})

t.test('every rendered object is a valid Kubernetes object (offline API schema)', async (t) => {
  for (const [dir, b] of builds) {
    for (const obj of b.objects) {
      const key = `${obj.apiVersion}/${obj.kind}`
      const model = models[key]
      t.ok(model, `${relative(root, dir)}: ${key} is a known model`)
      if (model === undefined) continue
      t.doesNotThrow(() => model(obj).validate(), `${relative(root, dir)}: ${keyOf(obj)} validates`)
    }
  }
})

t.test('the schema check catches a broken object', async (t) => {
  const broken = structuredClone(deployment) as unknown as { spec: { replicas: unknown } }
  broken.spec.replicas = 'two'
  t.throws(() => models['apps/v1/Deployment'](broken as unknown as K8sObject).validate())
})

t.test('the kustomizations render every manifest; the base no placeholders', async (t) => {
  const renderedKeys = new Set([...builds.values()].flatMap((b) => b.objects.map(keyOf)))
  for (const { file, obj } of sources) t.ok(renderedKeys.has(keyOf(obj)), `${relative(root, file)}: ${keyOf(obj)} is rendered by some kustomization`)
  const base = builds.get(baseDir)?.objects ?? []
  t.notOk(base.some((o) => o.kind === 'Secret' || /redis/i.test(o.metadata?.name ?? '')), 'the production base applies neither placeholder secrets nor the try-out Redis')
  t.same(base.map(keyOf).sort(), rendered.filter((o) => base.some((b) => keyOf(b) === keyOf(o))).map(keyOf).sort(), 'the try-out overlay contains the whole base')
  t.ok(rendered.some((o) => o.kind === 'StatefulSet') && rendered.some((o) => o.kind === 'Secret'), 'try-out adds the Secret example and Redis')
  const kustomization = parseDocs(readFileSync(join(baseDir, 'kustomization.yaml'), 'utf8'), 'base')[0] as Kustomization
  const sourceDeployment = one<IDeployment>('Deployment', 'wegate', sources.map((m) => m.obj))
  const image = sourceDeployment.spec?.template.spec?.containers.find((c) => c.name === 'wegate')?.image ?? ''
  t.ok(kustomization.images?.some((i) => i.name === image.split(':')[0]), 'the image can be retargeted with kustomize images:')
  t.ok(existsSync(join(tryOutDir, 'secret.example.yaml')))
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
  const redisFile = sources.find((m) => m.obj.kind === 'StatefulSet')?.file ?? ''
  t.match(readFileSync(redisFile, 'utf8'), /FOR TRYING OUT/)
  t.match(readFileSync(redisFile, 'utf8'), /managed Redis/)
  t.match(readFileSync(sources.find((m) => m.obj.kind === 'Secret')!.file, 'utf8'), /EXAMPLE ONLY/)
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
