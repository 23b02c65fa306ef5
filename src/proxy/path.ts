/**
 * Request-path normalisation. The gateway decides auth by path prefix, so every
 * spelling of a path must collapse to one form before matching, and that same
 * form is what the upstream receives: it sees exactly what was authorised.
 * Policy (docs/routing.md has the full table), close to Envoy's normalize_path +
 * merge_slashes + path_with_escaped_slashes_action=REJECT, plus a few rejections
 * in the spirit of Spring's StrictHttpFirewall:
 * - origin-form only (`/…`); `*` and absolute-form are rejected;
 * - `%XX` of an unreserved character (ALPHA DIGIT - . _ ~) is decoded, every
 *   other escape is kept with upper-case hex;
 * - rejected: encoded `/` `\` `;` `%`, encoded or raw control characters, raw
 *   `\` `;` `#` and other characters outside RFC 3986 `pchar`, raw non-ASCII,
 *   malformed escapes, escaped bytes that are not valid UTF-8 (overlongs such
 *   as `%C0%AE` included);
 * - `//` merged, `.` and `..` resolved (RFC 3986 §5.2.4); `..` above `/` rejected;
 * - case is kept: paths are case-sensitive;
 * - the query (from the first `?`) is returned byte-for-byte.
 */

/** Why a path was refused; for the log line, never for the client. */
export type PathRejection =
  | 'not-origin-form'
  | 'invalid-char'
  | 'non-ascii'
  | 'backslash'
  | 'path-parameter'
  | 'bad-escape'
  | 'encoded-slash'
  | 'encoded-control'
  | 'encoded-percent'
  | 'bad-utf8'
  | 'above-root'

export interface NormalisedPath {
  readonly ok: true
  /** Normalised path: matched against routes and forwarded upstream. */
  readonly path: string
  /** The raw query including its leading `?`, or `''`. */
  readonly query: string
}

export interface RejectedPath {
  readonly ok: false
  readonly reason: PathRejection
}

export type PathResult = NormalisedPath | RejectedPath

// One frozen object per reason: a rejection allocates nothing.
const REJECT: { readonly [K in PathRejection]: RejectedPath } = Object.freeze({
  'not-origin-form': Object.freeze({ ok: false, reason: 'not-origin-form' }),
  'invalid-char': Object.freeze({ ok: false, reason: 'invalid-char' }),
  'non-ascii': Object.freeze({ ok: false, reason: 'non-ascii' }),
  backslash: Object.freeze({ ok: false, reason: 'backslash' }),
  'path-parameter': Object.freeze({ ok: false, reason: 'path-parameter' }),
  'bad-escape': Object.freeze({ ok: false, reason: 'bad-escape' }),
  'encoded-slash': Object.freeze({ ok: false, reason: 'encoded-slash' }),
  'encoded-control': Object.freeze({ ok: false, reason: 'encoded-control' }),
  'encoded-percent': Object.freeze({ ok: false, reason: 'encoded-percent' }),
  'bad-utf8': Object.freeze({ ok: false, reason: 'bad-utf8' }),
  'above-root': Object.freeze({ ok: false, reason: 'above-root' })
} as const)

const SLASH = 0x2f
const DOT = 0x2e
const PERCENT = 0x25
const QUESTION = 0x3f

// Character classes of raw path bytes (0..127), built once at module load.
// 0: outside pchar, rejected
const C_OK = 1 // pchar that needs no attention
const C_SLASH = 2
const C_PERCENT = 3
const C_BACKSLASH = 4
const C_SEMICOLON = 5

const CLASS = new Uint8Array(128) // all 0 (rejected) by default
for (const ch of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&\'()*+,=:@') {
  CLASS[ch.charCodeAt(0)] = C_OK
}
CLASS[SLASH] = C_SLASH
CLASS[PERCENT] = C_PERCENT
CLASS[0x5c] = C_BACKSLASH
CLASS[0x3b] = C_SEMICOLON

// Unreserved characters (RFC 3986 §2.3): their escapes are decoded.
const UNRESERVED = new Uint8Array(128)
for (const ch of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~') {
  UNRESERVED[ch.charCodeAt(0)] = 1
}

const HEX_UPPER = '0123456789ABCDEF'

// UTF-8 lead bytes 0x80..0xFF (RFC 3629 §4): continuation bytes that must
// follow (0: not a lead byte) and the range of the first one, which rules out
// overlongs (E0, F0), surrogates (ED) and code points past U+10FFFF (F4).
const UTF8_NEED = new Uint8Array(128)
const UTF8_LO = new Uint8Array(128).fill(0x80)
const UTF8_HI = new Uint8Array(128).fill(0xbf)
for (let b = 0xc2; b <= 0xf4; b++) UTF8_NEED[b - 0x80] = b <= 0xdf ? 1 : b <= 0xef ? 2 : 3
UTF8_LO[0xe0 - 0x80] = 0xa0
UTF8_HI[0xed - 0x80] = 0x9f
UTF8_LO[0xf0 - 0x80] = 0x90
UTF8_HI[0xf4 - 0x80] = 0x8f

/** Value of a hex digit, or -1. */
function hexValue (c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  return -1
}

/**
 * Normalise a request-target (`req.url`: path and optional query). Returns the
 * path to match and forward plus the untouched query, or why it was refused.
 */
export function normalisePath (rawUrl: string): PathResult {
  const len = rawUrl.length
  if (len === 0 || rawUrl.charCodeAt(0) !== SLASH) return REJECT['not-origin-form']
  // One scan validates the raw characters and finds whether anything needs
  // rewriting; most paths are already clean and are returned as they are.
  let end = len
  let clean = true
  for (let i = 0; i < len; i++) {
    const c = rawUrl.charCodeAt(i)
    if (c === QUESTION) { end = i; break }
    if (c > 0x7e) return c > 0x7f ? REJECT['non-ascii'] : REJECT['invalid-char']
    switch (CLASS[c]) {
      case C_OK: break
      case C_SLASH:
        if (clean && isMergeOrDot(rawUrl, i + 1)) clean = false
        break
      case C_PERCENT: clean = false; break
      case C_BACKSLASH: return REJECT.backslash
      case C_SEMICOLON: return REJECT['path-parameter']
      default: return REJECT['invalid-char']
    }
  }
  if (clean) {
    return end === len
      ? { ok: true, path: rawUrl, query: '' }
      : { ok: true, path: rawUrl.slice(0, end), query: rawUrl.slice(end) }
  }
  return rebuild(rawUrl, end)
}

/** Does the segment starting at `i` (just after a `/`) need merging or dot resolution? */
function isMergeOrDot (s: string, i: number): boolean {
  const c = s.charCodeAt(i) // NaN past the end
  if (c === SLASH) return true
  if (c !== DOT) return false
  const c2 = s.charCodeAt(i + 1)
  if (c2 === SLASH || c2 === QUESTION || Number.isNaN(c2)) return true
  if (c2 !== DOT) return false
  const c3 = s.charCodeAt(i + 2)
  return c3 === SLASH || c3 === QUESTION || Number.isNaN(c3)
}

/** Slow path: decode escapes, then merge slashes and resolve dot segments. */
function rebuild (raw: string, end: number): PathResult {
  const out: string[] = []
  let trailingSlash = false
  let start = 1 // just after the leading '/'
  for (;;) {
    let stop = raw.indexOf('/', start)
    if (stop === -1 || stop > end) stop = end
    const seg = decodeSegment(raw, start, stop)
    if (typeof seg !== 'string') return seg
    if (seg === '' || seg === '.') {
      trailingSlash = true
    } else if (seg === '..') {
      if (out.length === 0) return REJECT['above-root']
      out.pop()
      trailingSlash = true
    } else {
      out.push(seg)
      trailingSlash = false
    }
    if (stop === end) break
    start = stop + 1
  }
  let path = '/' + out.join('/')
  if (trailingSlash && out.length > 0) path += '/'
  return { ok: true, path, query: end === raw.length ? '' : raw.slice(end) }
}

/**
 * Decode one segment's escapes per the policy. Raw characters were already
 * validated by the scan; here only `%XX` needs work.
 */
function decodeSegment (raw: string, from: number, to: number): string | RejectedPath {
  let k = raw.indexOf('%', from)
  if (k === -1 || k >= to) return raw.slice(from, to)
  let result = ''
  let chunk = from
  // UTF-8 state across consecutive escaped bytes: continuation bytes still
  // expected, and the allowed range of the next one (catches overlongs and
  // surrogates, RFC 3629 §4).
  let need = 0
  let lo = 0x80
  let hi = 0xbf
  for (; k < to; k++) {
    if (raw.charCodeAt(k) !== PERCENT) {
      if (need > 0) return REJECT['bad-utf8']
      continue
    }
    const h1 = k + 1 < to ? hexValue(raw.charCodeAt(k + 1)) : -1
    const h2 = k + 2 < to ? hexValue(raw.charCodeAt(k + 2)) : -1
    if (h1 < 0 || h2 < 0) return REJECT['bad-escape']
    const v = h1 * 16 + h2
    if (need > 0) {
      if (v < lo || v > hi) return REJECT['bad-utf8']
      need--
      lo = 0x80
      hi = 0xbf
    } else if (v >= 0x80) {
      need = UTF8_NEED[v - 0x80]
      if (need === 0) return REJECT['bad-utf8']
      lo = UTF8_LO[v - 0x80]
      hi = UTF8_HI[v - 0x80]
    } else if (v === SLASH || v === 0x5c) {
      return REJECT['encoded-slash']
    } else if (v < 0x20 || v === 0x7f) {
      return REJECT['encoded-control']
    } else if (v === 0x3b) {
      return REJECT['path-parameter']
    } else if (v === PERCENT) {
      // %25 invites double decoding (`%252e%252e`) by whatever sits behind us.
      return REJECT['encoded-percent']
    }
    result += raw.slice(chunk, k)
    result += v < 0x80 && UNRESERVED[v] === 1
      ? String.fromCharCode(v)
      : '%' + HEX_UPPER[h1] + HEX_UPPER[h2]
    k += 2
    chunk = k + 1
  }
  if (need > 0) return REJECT['bad-utf8']
  return result + raw.slice(chunk, to)
}
