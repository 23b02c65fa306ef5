/**
 * What 「构建 npm」, Taro and uni-app consume from client/miniprogram: the built
 * dist/ (CommonJS, ES2017, declarations), no runtime dependencies, nothing
 * required from outside the package.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import { loadClient } from './helpers/client-stack.js'

const root = new URL('../client/miniprogram/', import.meta.url).pathname
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as Record<string, any>

t.test('package.json: the npm name, CommonJS main and types in dist, no dependencies', async (t) => {
  t.equal(pkg.name, 'wegate-miniprogram')
  t.equal(pkg.main, 'dist/index.js')
  t.equal(pkg.types, 'dist/index.d.ts')
  t.equal(pkg.type, 'commonjs')
  t.same(pkg.files, ['dist'])
  t.equal(pkg.dependencies, undefined, 'no runtime dependencies')
  t.equal(pkg.peerDependencies, undefined)
})

t.test('dist: ES2017 CommonJS with declarations, requiring only its own files', async (t) => {
  const files = readdirSync(join(root, 'dist'))
  const js = files.filter((f) => f.endsWith('.js'))
  t.ok(js.includes('index.js'))
  for (const f of js) {
    t.ok(files.includes(f.replace(/\.js$/, '.d.ts')), `${f} has its .d.ts`)
    const text = readFileSync(join(root, 'dist', f), 'utf8')
    t.match(text, /^"use strict";/, `${f}: CommonJS`)
    t.notMatch(text, /^\s*(import|export) /m, `${f}: no ES module syntax`)
    for (const m of text.matchAll(/require\("([^"]+)"\)/g)) t.match(m[1], /^\.\/[a-z-]+$/, `${f}: requires ${m[1]}, one of its own files`)
    // What an ES2017 target must not contain (optional chaining, ??, catch without binding).
    t.notMatch(text, /\?\.[a-zA-Z_$[(]|\?\?|catch \{/, `${f}: ES2017 syntax only`)
  }
  const lib = loadClient()
  t.same(Object.keys(lib).sort(), ['Codes', 'WegateError', 'createClient'])
  t.match(readFileSync(join(root, 'dist', 'index.d.ts'), 'utf8'), /createClient/)
})
