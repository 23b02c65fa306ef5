import { findDemoCredentials } from '../config/demo.js'
import { ConfigError, formatProblem, type ConfigProblem } from '../config/errors.js'
import { loadConfigFile } from '../config/load.js'

export interface CheckOptions {
  /** Judge the file as `serve --demo` would: the repository's demo JWT secret is allowed. */
  demo?: boolean
}

/**
 * `wegate check -c file [--demo]`: validate like `nginx -t`, with the verdict
 * `wegate serve` (with the same flags) would reach. Returns the exit code.
 */
export async function check (file: string, opts: CheckOptions = {}, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const fail = (problems: ConfigProblem[]): number => {
    err.write(`${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n`)
    for (const p of problems) err.write(`  ${formatProblem(p)}\n`)
    return 1
  }
  try {
    const loaded = await loadConfigFile(file)
    const demo = findDemoCredentials(loaded.config)
    if (opts.demo !== true && demo.problems.length > 0) return fail(demo.problems)
    for (const w of demo.warnings) err.write(`${file}: warning: ${formatProblem(w)}\n`)
    const routes = loaded.config.routes.length
    out.write(`${file}: ok (${routes} route${routes === 1 ? '' : 's'}, sha256 ${loaded.hash})\n`)
    return 0
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    return fail(e.problems)
  }
}
