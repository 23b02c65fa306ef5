/**
 * `wegate check` on the channels' settings (real CLI process): app types, the
 * redirect allowlist's syntax, publicUrl needed by the browser flows.
 */
import { execFile } from 'node:child_process'
import t from 'tap'
import { writeConfigFile } from './helpers/gateway.js'

const CLI = ['--import', 'tsx', 'src/cli/main.ts']

function check (file: string): Promise<{ code: number, stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [...CLI, 'check', '-c', file], { env: { PATH: process.env.PATH }, timeout: 30_000 }, (err, _stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err.code as number), stderr })
    })
  })
}

const MP = { appId: 'wxmp', secret: 's1' }
const H5 = { type: 'officialAccount', appId: 'wxh5', secret: 's2', redirects: ['https://h5.example.com/', 'https://shop.example.com/app'] }
const WEB = { type: 'website', appId: 'wxweb', secret: 's3', redirects: ['http://localhost:3000/'] }
const APP = { type: 'mobileApp', appId: 'wxapp', secret: 's4' }

t.test('every channel in one config, with publicUrl: valid', async (t) => {
  const file = await writeConfigFile({ publicUrl: 'https://api.example.com', wechat: { baseUrl: 'http://127.0.0.1:9', apps: [MP, H5, WEB, APP] } })
  const r = await check(file)
  t.equal(r.code, 0, r.stderr)
})

t.test('a redirect flow without publicUrl, redirects on a non-browser app, and no redirects on a browser app are refused', async (t) => {
  const file = await writeConfigFile({
    wechat: {
      apps: [
        { ...MP, redirects: ['https://h5.example.com/'] },
        { ...H5, redirects: [] },
        APP
      ]
    }
  })
  const r = await check(file)
  t.equal(r.code, 1)
  t.match(r.stderr, /publicUrl: is required by wechat\.apps\[1\] \(type officialAccount\)/)
  t.match(r.stderr, /wechat\.apps\[0\]\.redirects: only officialAccount and website apps redirect \(this app is miniprogram\)/)
  t.match(r.stderr, /wechat\.apps\[1\]\.redirects: is required with type officialAccount/)
  t.match(r.stderr, /3 problems/)

  const unknown = await check(await writeConfigFile({ wechat: { apps: [{ ...APP, type: 'tv' }] } }))
  t.match(unknown.stderr, /wechat\.apps\[0\]\.type: must be one of miniprogram \| officialAccount \| website \| mobileApp/)
})

t.test('loginBinding: cookie or codeChallenge, on officialAccount and website apps only', async (t) => {
  const good = await check(await writeConfigFile({
    publicUrl: 'https://api.example.com',
    wechat: { baseUrl: 'http://127.0.0.1:9', apps: [{ ...H5, loginBinding: 'codeChallenge' }, { ...WEB, loginBinding: 'cookie' }] }
  }))
  t.equal(good.code, 0, good.stderr)
  const elsewhere = await check(await writeConfigFile({ wechat: { apps: [{ ...MP, loginBinding: 'cookie' }] } }))
  t.equal(elsewhere.code, 1)
  t.match(elsewhere.stderr, /wechat\.apps\[0\]\.loginBinding: only officialAccount and website apps have browser logins \(this app is miniprogram\)/)
  const unknown = await check(await writeConfigFile({ publicUrl: 'https://api.example.com', wechat: { apps: [{ ...H5, loginBinding: 'pkce' }] } }))
  t.match(unknown.stderr, /wechat\.apps\[0\]\.loginBinding: must be one of cookie \| codeChallenge/)
})

t.test('redirect allowlist syntax: absolute http(s), a path or trailing /, no wildcards, query, fragment or credentials', async (t) => {
  const bad = [
    'https://h5.example.com', // no path: would also match https://h5.example.com.evil.net/
    'https://*.example.com/',
    '/relative/',
    'javascript:alert(1)//',
    'https://h5.example.com/?next=',
    'https://h5.example.com/#x',
    'https://user:pw@h5.example.com/',
    'ftp://h5.example.com/'
  ]
  const file = await writeConfigFile({
    publicUrl: 'https://api.example.com/?x=1',
    wechat: { apps: [{ ...WEB, redirects: bad }] }
  })
  const r = await check(file)
  t.equal(r.code, 1)
  t.match(r.stderr, /publicUrl: must not have a query or fragment/)
  t.match(r.stderr, /redirects\[0\]: 'https:\/\/h5\.example\.com' must be an absolute http\(s\) URL with a path or a trailing \//)
  t.match(r.stderr, /redirects\[1\]: no wildcards/)
  t.match(r.stderr, /redirects\[2\]: '\/relative\/' must be an absolute/)
  t.match(r.stderr, /redirects\[3\]: 'javascript:alert\(1\)\/\/' must be an absolute/)
  t.match(r.stderr, /redirects\[4\]: must not have a query or fragment/)
  t.match(r.stderr, /redirects\[5\]: must not have a query or fragment/)
  t.match(r.stderr, /redirects\[6\]: must not carry credentials/)
  t.match(r.stderr, /redirects\[7\]: 'ftp:\/\/h5\.example\.com\/' must be an absolute/)
  t.match(r.stderr, /9 problems/)
})

t.test('publicUrl: https, or http on this machine only (the login cookie is Secure)', async (t) => {
  const at = async (publicUrl: string) => await check(await writeConfigFile({ publicUrl, wechat: { apps: [H5] } }))
  t.equal((await at('http://127.0.0.1:8080')).code, 0)
  t.equal((await at('http://localhost:8080/')).code, 0)
  const plain = await at('http://api.example.com')
  t.equal(plain.code, 1)
  t.match(plain.stderr, /publicUrl: must be https:\/\//)
})
