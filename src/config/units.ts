/** Parse a duration such as `800ms`, `30s`, `15m`, `2h`, `7d` into milliseconds. */
export function parseDuration (text: string): number {
  const m = DURATION.exec(text)
  if (m === null) throw new Error(`invalid duration '${text}'`)
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] as keyof typeof DURATION_UNITS])
}

/** Parse a byte size such as `512`, `64kb`, `1mb` into bytes (binary units). */
export function parseBytes (text: string): number {
  const m = BYTES.exec(text.toLowerCase())
  if (m === null) throw new Error(`invalid size '${text}'`)
  return Math.round(Number(m[1]) * BYTE_UNITS[(m[2] ?? 'b') as keyof typeof BYTE_UNITS])
}

const DURATION_UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const BYTE_UNITS = { b: 1, kb: 1024, mb: 1024 ** 2, gb: 1024 ** 3 }

export const DURATION_PATTERN = '^[0-9]+(\\.[0-9]+)?(ms|s|m|h|d)$'
export const BYTES_PATTERN = '^[0-9]+(\\.[0-9]+)?([kKmMgG]?[bB])?$'
const DURATION = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)$/
const BYTES = /^([0-9]+(?:\.[0-9]+)?)(b|kb|mb|gb)?$/
