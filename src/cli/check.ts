import { formatProblem } from '../config/errors.js'
import { judgeConfig } from './verdict.js'

export interface CheckOptions {
  /** Judge the file as `serve --demo` would: the repository's demo JWT secret is allowed. */
  demo?: boolean
}

/**
 * `wegate check -c file [--demo]`: validate like `nginx -t`, with the verdict
 * `wegate serve` (with the same flags) would reach. Returns the exit code.
 */
export async function check (file: string, opts: CheckOptions = {}, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const verdict = await judgeConfig(file, opts.demo === true)
  for (const w of verdict.warnings) err.write(`${file}: warning: ${formatProblem(w)}\n`)
  if (!verdict.ok) {
    const n = verdict.problems.length
    err.write(`${file}: ${n} problem${n === 1 ? '' : 's'}\n`)
    for (const p of verdict.problems) err.write(`  ${formatProblem(p)}\n`)
    return 1
  }
  const routes = verdict.loaded.config.routes.length
  out.write(`${file}: ok (${routes} route${routes === 1 ? '' : 's'}, sha256 ${verdict.loaded.hash})\n`)
  return 0
}
