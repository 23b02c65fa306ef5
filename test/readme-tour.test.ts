/**
 * The README's 60-second tour, run as written: the gateway started the way
 * `npm start` starts it (the real CLI, `serve -c gateway.yaml --demo`), the
 * tour's shell block executed line by line by /bin/sh, and every output
 * compared with the `#` lines the README shows under its command. Only the
 * ports differ (free ones, through gateway.yaml's ${VAR}s), and `npx wegate`
 * runs the source (no build needed). When the README or the gateway drifts,
 * this fails.
 */
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import t from 'tap'

const CLI = `${process.execPath} --import tsx src/cli/main.ts`

interface Step {
  command: string
  /** The README's `#` lines right under the command, `# ` removed; empty: output not shown. */
  expected: string[]
}

/** The fenced block that follows `marker` in `text`. */
function blockAfter (text: string, marker: string): string {
  const at = text.indexOf(marker)
  if (at < 0) throw new Error(`README.md: '${marker}' not found`)
  const m = /```[a-z]*\n([\s\S]*?)```/.exec(text.slice(at))
  if (m === null) throw new Error(`README.md: no code block after '${marker}'`)
  return m[1]
}

/** Commands are the lines that are neither blank nor comments; the comments right under one are its output. */
function steps (block: string): Step[] {
  const out: Step[] = []
  let current: Step | undefined
  for (const line of block.split('\n')) {
    if (line.trim() === '') {
      current = undefined
    } else if (line.startsWith('#')) {
      current?.expected.push(line.replace(/^# ?/, ''))
    } else {
      current = { command: line, expected: [] }
      out.push(current)
    }
  }
  return out
}

/** `…` stands for anything on its line; the rest is literal. */
function pattern (lines: string[]): RegExp {
  const body = lines.map((l) => l.split('…').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('[^\\n]*?')).join('\n')
  return new RegExp(`^${body}$`)
}

async function freePort (): Promise<number> {
  const server = createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as { port: number }
  server.close()
  await once(server, 'close')
  return port
}

t.test('the README tour, copied and pasted, prints what the README says', async (t) => {
  const readme = await readFile('README.md', 'utf8')
  const ports = { public: await freePort(), admin: await freePort(), wechat: await freePort(), stable: await freePort(), canary: await freePort() }
  // The README's addresses → this run's (the defaults gateway.yaml's ${VAR}s fall back to).
  const local = (text: string): string => text
    .replaceAll('127.0.0.1:8080', `127.0.0.1:${ports.public}`)
    .replaceAll('127.0.0.1:9091', `127.0.0.1:${ports.admin}`)
    .replaceAll('npx wegate', CLI)

  const gateway = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'serve', '-c', 'gateway.yaml', '--demo'], {
    env: {
      PATH: process.env.PATH,
      PORT: String(ports.public),
      ADMIN_PORT: String(ports.admin),
      WECHAT_BASE_URL: `http://127.0.0.1:${ports.wechat}`,
      DEMO_STABLE_URL: `http://127.0.0.1:${ports.stable}`,
      DEMO_CANARY_URL: `http://127.0.0.1:${ports.canary}`
    },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  gateway.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  gateway.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const exited = once(gateway, 'exit')
  t.teardown(async () => {
    if (gateway.exitCode === null) {
      gateway.kill('SIGTERM')
      await exited
    }
  })
  // Up when the demo banner is out (printed after listening).
  await new Promise<void>((resolve, reject) => {
    const check = () => { if (/\n {2}admin {3}http/.test(stdout)) resolve() }
    gateway.stdout.on('data', check)
    exited.then(() => reject(new Error(`the gateway exited:\n${stderr}`)), reject)
    check()
  })

  const banner = blockAfter(readme, 'It prints:')
  for (const line of banner.split('\n').filter((l) => l.trim() !== '')) {
    t.ok(stdout.includes(local(line)), `the start prints: ${line.trim()}`)
  }

  // One shell, as in a terminal ($TOKEN carries over); a marker after each command splits the output.
  const tour = steps(blockAfter(readme, 'In another terminal'))
  t.ok(tour.length >= 8, `the tour has its commands (${tour.length})`)
  const script = tour.map((s, i) => `${local(s.command)}\nprintf '\\n@@step ${i}@@\\n'`).join('\n')
  const outputs = await new Promise<string[]>((resolve, reject) => {
    execFile('/bin/sh', ['-c', script], { env: { PATH: process.env.PATH }, timeout: 60_000 }, (err, out, errOut) => {
      if (err !== null) reject(new Error(`${err.message}\n${errOut}`))
      else resolve(out.split(/\n?@@step \d+@@\n/).slice(0, tour.length))
    })
  })
  tour.forEach((step, i) => {
    if (step.expected.length === 0) return
    t.match(outputs[i].trimEnd(), pattern(step.expected.map(local)), step.command)
  })

  // The tour and the docs' examples log in more than 5 times a minute: the demo allows it.
  for (let i = 1; i <= 10; i++) {
    const r = await fetch(`http://127.0.0.1:${ports.public}/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ code: `u-newcomer-${i}` })
    })
    t.equal(r.status, 200, `login ${i + 1} within the minute`)
  }
})
