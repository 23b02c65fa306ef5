/**
 * What a config problem looks like, and the error that lists them. Kept apart
 * from the loader so that code reporting a config problem (token keys, the
 * demo credentials) does not pull in YAML parsing and the schema compiler.
 */

export interface ConfigProblem {
  /** Path in the file, e.g. `routes[1].upstreams[0].weight` (empty for the whole file). */
  path: string
  message: string
  /** 1-based line in the file, when known. */
  line?: number
}

/** Thrown when a config cannot be used; lists every problem found. */
export class ConfigError extends Error {
  readonly problems: ConfigProblem[]
  readonly file: string
  constructor (file: string, problems: ConfigProblem[]) {
    super(`${file}: ${problems.length} problem(s)\n` + problems.map((p) => '  ' + formatProblem(p)).join('\n'))
    this.name = 'ConfigError'
    this.file = file
    this.problems = problems
  }
}

/** `routes[0].timeout: must be a duration … (line 12)`; `(file)` for the whole file. */
export function formatProblem (p: ConfigProblem): string {
  const where = p.path === '' ? '(file)' : p.path
  return p.line === undefined ? `${where}: ${p.message}` : `${where}: ${p.message} (line ${p.line})`
}
