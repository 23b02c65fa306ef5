/**
 * What `wegate serve` decides about a config file before it starts anything,
 * shared with `wegate check` so that both give the same verdict and the same
 * list: the file's own problems (schema, ${VAR}, rules), then, once it loads,
 * the repository's demo JWT secret (unless --demo) and the token key files
 * (read and checked against the algorithm) and the TLS certificate and key
 * (they match, the certificate is valid now; a warning when it expires within
 * 14 days), each with its path and line.
 */
import { createTokenService } from '../auth/tokens.js'
import { findDemoCredentials } from '../config/demo.js'
import { ConfigError, type ConfigProblem } from '../config/errors.js'
import { inFileOrder, loadConfigFile, type LoadedConfig } from '../config/load.js'
import { expiryWarning, loadTlsMaterial } from '../config/tls.js'

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
  const tls = await tlsVerdict(loaded)
  const keys = [...await keyProblems(loaded), ...tls.problems]
  const secret = demo ? [] : credentials.problems
  const warnings = [...credentials.warnings, ...tls.warnings].map((p) => ({ ...p, line: p.line ?? loaded.lineOf?.(p.path) }))
  if (secret.length + keys.length === 0) return { ok: true, loaded, warnings }
  const problems = inFileOrder([...secret, ...keys].map((p) => ({ ...p, line: p.line ?? loaded.lineOf?.(p.path) })))
  // The public secret alone gets its own words: outside the demo, anyone could forge tokens.
  const reason = keys.length === 0
    ? `${file} uses the repository's public demo JWT secret`
    : `${file} has ${problems.length} problem(s)`
  return { ok: false, reason, problems, warnings }
}

/** The TLS pair's problems (unreadable, unparsable, mismatched, not valid now) and the expiry warning. */
async function tlsVerdict (loaded: LoadedConfig): Promise<{ problems: ConfigProblem[], warnings: ConfigProblem[] }> {
  const tls = loaded.config.listen.tls
  if (tls === undefined) return { problems: [], warnings: [] }
  try {
    const material = await loadTlsMaterial(tls, loaded.file)
    const warning = expiryWarning(tls, material)
    return { problems: [], warnings: warning === undefined ? [] : [warning] }
  } catch (e) {
    if (e instanceof ConfigError) return { problems: e.problems, warnings: [] }
    throw e
  }
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
