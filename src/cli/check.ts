import { ConfigError, formatProblem, loadConfigFile } from '../config/load.js'

/** `wegate check -c file`: validate like `nginx -t`. Returns the exit code. */
export async function check (file: string, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  try {
    const loaded = await loadConfigFile(file)
    const routes = loaded.config.routes.length
    out.write(`${file}: ok (${routes} route${routes === 1 ? '' : 's'}, sha256 ${loaded.hash})\n`)
    return 0
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    err.write(`${file}: ${e.problems.length} problem${e.problems.length === 1 ? '' : 's'}\n`)
    for (const p of e.problems) err.write(`  ${formatProblem(p)}\n`)
    return 1
  }
}
