import { readFile } from 'node:fs/promises'
import t from 'tap'
import { ErrorCatalog } from '../src/errors.js'

const RANGES: Array<[number, number, string]> = [
  [10000, 19999, 'WeChat login'],
  [20000, 29999, 'authentication'],
  [30000, 39999, 'traffic'],
  [40000, 49999, 'validation'],
  [50000, 59999, 'system']
]

t.test('every catalog code is documented in docs/errors.md with its status and message', async (t) => {
  const doc = await readFile('docs/errors.md', 'utf8')
  for (const [name, e] of Object.entries(ErrorCatalog)) {
    t.ok(doc.includes(`| ${e.code} | ${e.status} | \`${name}\` | ${e.message} |`), `${name} (${e.code}) documented`)
  }
  const documented = [...doc.matchAll(/^\| (\d{5}) \|/gm)].map((m) => Number(m[1]))
  const known = new Set<number>(Object.values(ErrorCatalog).map((e) => e.code))
  t.same(documented.filter((c) => !known.has(c)), [], 'the doc lists no code the gateway does not have')
})

t.test('codes are unique, in the seed ranges, and 5xx codes are system codes', async (t) => {
  const codes = Object.values(ErrorCatalog).map((e) => e.code)
  t.equal(new Set(codes).size, codes.length, 'unique')
  for (const [name, e] of Object.entries(ErrorCatalog)) {
    t.ok(RANGES.some(([lo, hi]) => e.code >= lo && e.code <= hi), `${name} in a range`)
    if (e.status >= 500) t.ok(e.code >= 50000, `${name}: a 5xx status is a system code`)
    if (e.code >= 50000) t.ok(e.status >= 500, `${name}: a system code is a 5xx`)
  }
})
