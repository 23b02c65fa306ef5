/**
 * Run `wegate serve` as a real child process on a config file and read its
 * NDJSON log lines (ports 0: the URLs come from the 'wegate listening' line).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import type { TestContext } from './gateway.js'

export interface GatewayProcess {
  child: ChildProcess
  url: string
  adminUrl: string
  lines: Array<Record<string, unknown>>
  /** Resolves with the first log line (past or future) that matches. */
  waitLog: (pred: (l: Record<string, unknown>) => boolean) => Promise<Record<string, unknown>>
  /** SIGTERM and wait for the exit code. */
  stop: () => Promise<number | null>
  /** The exit code, once the process has exited. */
  exited: Promise<number | null>
  /** Everything written to stderr so far (also passed through to the test's stderr). */
  stderr: () => string
}

/** `preload`: modules node imports before the CLI (e.g. a test fixture that misbehaves on a signal). */
export async function startGatewayProcess (t: TestContext, file: string, env: Record<string, string> = {}, preload: string[] = []): Promise<GatewayProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', ...preload.flatMap((m) => ['--import', m]), 'src/cli/main.ts', 'serve', '-c', file], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env }
  })
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk
    process.stderr.write(chunk)
  })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const lines: Array<Record<string, unknown>> = []
  const waiters: Array<() => void> = []
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try { lines.push(JSON.parse(line) as Record<string, unknown>) } catch { return }
    for (const w of waiters.splice(0)) w()
  })
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    resolve(code)
    for (const w of waiters.splice(0)) w()
  }))
  const waitLog = async (pred: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> => {
    for (;;) {
      const hit = lines.find(pred)
      if (hit !== undefined) return hit
      if (child.exitCode !== null) throw new Error(`gateway exited (${child.exitCode}) before the expected log line`)
      await new Promise<void>((resolve) => waiters.push(resolve))
    }
  }
  const listening = await waitLog((l) => l.msg === 'wegate listening')
  return {
    child,
    url: String(listening.publicUrl),
    adminUrl: String(listening.adminUrl),
    lines,
    waitLog,
    exited,
    stderr: () => stderr,
    stop: async () => {
      child.kill('SIGTERM')
      return await exited
    }
  }
}
