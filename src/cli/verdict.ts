/**
 * What `wegate serve` decides about a config file before it starts anything,
 * shared with `wegate check` so that both give the same verdict and the same
 * list: the file's own problems (schema, ${VAR}, rules), then, once it loads,
 * the repository's demo JWT secret (unless --demo) and the token key files
 * (read and checked against the algorithm), each with its path and line.
 */
import { createTokenService } from '../auth/tokens.js'
import { findDemoCredentials } from '../config/demo.js'
import { ConfigError, type ConfigProblem } from '../config/errors.js'
import { inFileOrder, loadConfigFile, type LoadedConfig } from '../config/load.js'

export type Verdict =
  | { ok: true, loaded: LoadedConfig, warnings: ConfigProblem[] }
  | {
    ok: false
    /** Why, for `refusing to start, <reason>:` — the file has problems, or it uses the demo secret. */
    reason: string
    problems: ConfigProblem[]
    warnings: ConfigProblem[]
  }

/** Judge `file` as serve would (`demo`: serve --demo, which allows the demo JWT secret). */
export async function judgeConfig (file: string, demo: boolean): Promise<Verdict> {
  let loaded: LoadedConfig
  try {
    loaded = await loadConfigFile(file)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    return { ok: false, reason: `${file} has ${e.problems.length} problem(s)`, problems: e.problems, warnings: [] }
  }
  const credentials = findDemoCredentials(loaded.config)
  const keys = await keyProblems(loaded)
  const secret = demo ? [] : credentials.problems
  if (secret.length + keys.length === 0) return { ok: true, loaded, warnings: credentials.warnings }
  const problems = inFileOrder([...secret, ...keys].map((p) => ({ ...p, line: p.line ?? loaded.lineOf?.(p.path) })))
  // The public secret alone gets its own words: outside the demo, anyone could forge tokens.
  const reason = keys.length === 0
    ? `${file} uses the repository's public demo JWT secret`
    : `${file} has ${problems.length} problem(s)`
  return { ok: false, reason, problems, warnings: credentials.warnings }
}

/** What building the token keys would refuse: unreadable or unusable key files. */
async function keyProblems (loaded: LoadedConfig): Promise<ConfigProblem[]> {
  try {
    await createTokenService(loaded.config.tokens)
    return []
  } catch (e) {
    if (e instanceof ConfigError) return e.problems
    throw e
  }
}
