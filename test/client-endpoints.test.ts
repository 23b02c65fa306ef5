/**
 * wegate-miniprogram (built dist/) against a small fake of the gateway's
 * /auth/phone and /auth/decrypt, for what is hard to make the real one do
 * (client-hub.test.ts has the end-to-end tests): the exact request shape,
 * envelope errors as WegateError, decrypt's recovery giving up after one login.
 * Plus what needs no gateway at all: which URLs get the token, baseUrl checks,
 * logout offline, storage that refuses writes.
 */
import t from 'tap'
import { loadClient } from './helpers/client-stack.js'
import { createWx } from './helpers/miniprogram.js'
import { readBody, startServer } from './helpers/upstream.js'

const { createClient, WegateError } = loadClient()

interface Seen { path: string, authorization: string | undefined, contentType: string | undefined, body: any }
const seen: Seen[] = []
let logins = 0
/** decrypt answers 10005 (stale session_key) until the login count reaches this. */
let decryptNeedsLogin = 0

const fake = await startServer(t, (req, res) => {
  readBody(req).then((b) => {
    const body = b.text === '' ? undefined : JSON.parse(b.text)
    seen.push({ path: req.url ?? '', authorization: req.headers.authorization, contentType: req.headers['content-type'], body })
    const answer = (status: number, code: number, data: unknown, message = code === 200 ? 'ok' : 'refused') => {
      res.writeHead(status, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ code, message, data }))
    }
    if (req.url === '/auth/login') {
      logins++
      return answer(200, 200, { accessToken: `at-${logins}`, tokenType: 'Bearer', expiresIn: 900, refreshToken: `rt-${logins}`, refreshExpiresIn: 86400, openid: 'oFake' })
    }
    if (req.url === '/auth/phone') {
      if (body.code === 'used') return answer(400, 10009, null, 'Phone number code is invalid, expired or already used; ask the user to tap the button again')
      return answer(200, 200, { phoneNumber: '+8613800000000', purePhoneNumber: '13800000000', countryCode: '86' })
    }
    if (req.url === '/auth/decrypt') {
      if (logins < decryptNeedsLogin) return answer(400, 10005, null, 'Could not decrypt with the current WeChat session')
      return answer(200, 200, { stepInfoList: [{ timestamp: 1, step: 42 }], watermark: { appid: 'wx00000000000demo0', timestamp: 1 } })
    }
    if (req.url === '/auth/logout') return answer(200, 200, null)
    return answer(404, 30004, null, 'No route matches this path')
  }, () => res.destroy())
})

const client = () => {
  const wx = createWx('fake')
  return { wx, client: createClient({ baseUrl: fake.url, wx }) }
}

t.test('getPhoneNumber: POST /auth/phone {code} with the token; the number, or a WegateError', async (t) => {
  const { client: c } = client()
  seen.length = 0
  const phone = await c.getPhoneNumber('phone-code-1')
  t.same(phone, { phoneNumber: '+8613800000000', purePhoneNumber: '13800000000', countryCode: '86' })
  t.match(seen.map((s) => s.path), ['/auth/login', '/auth/phone'])
  t.equal(seen[1].authorization, `Bearer ${c.session()?.accessToken}`)
  t.match(seen[1].contentType, /^application\/json/)
  t.same(seen[1].body, { code: 'phone-code-1' })
  const err = await c.getPhoneNumber('used').catch((e: unknown) => e)
  t.ok(err instanceof WegateError)
  t.match(err, { code: 10009, statusCode: 400, message: /tap the button again/ })
  await t.rejects(c.getPhoneNumber(undefined as unknown as string), TypeError, 'the user declined: no code, no request')
  t.equal(seen.length, 3)
})

t.test('decrypt: POST /auth/decrypt with exactly the given fields; the decrypted object', async (t) => {
  const { client: c } = client()
  seen.length = 0
  const input = { encryptedData: 'ZW5j', iv: 'aXY=', rawData: '{"a":1}', signature: 'ab12' }
  const out = await c.decrypt({ ...input, extra: 'dropped' } as typeof input)
  t.equal(out.stepInfoList[0].step, 42)
  const call = seen.find((s) => s.path === '/auth/decrypt')
  t.same(call?.body, input)
  t.ok(call?.authorization?.startsWith('Bearer '))
  await t.rejects(c.decrypt({ iv: 'x' } as unknown as typeof input), TypeError)
})

t.test('decrypt with a fetcher: a stale session_key (10005) → one new login, data fetched again, one retry', async (t) => {
  const { wx, client: c } = client()
  await c.login()
  decryptNeedsLogin = logins + 1
  let fetched = 0
  const out = await c.decrypt(async () => { fetched++; return { encryptedData: 'ZW5j', iv: 'aXY=' } })
  t.equal(out.stepInfoList[0].step, 42)
  t.equal(fetched, 2, 'the data is fetched again after the new login')
  t.equal(wx.codes.length, 2, 'one new wx.login')

  decryptNeedsLogin = logins + 5
  fetched = 0
  const err = await c.decrypt(() => { fetched++; return { encryptedData: 'ZW5j', iv: 'aXY=' } }).catch((e: unknown) => e)
  t.match(err, { code: 10005 }, 'still stale after one new login: the error, no loop')
  t.equal(fetched, 2)
  t.equal(wx.codes.length, 3)
  const plain = await c.decrypt({ encryptedData: 'ZW5j', iv: 'aXY=' }).catch((e: unknown) => e)
  t.match(plain, { code: 10005 }, 'plain data cannot be fetched again: the caller gets 10005')
  t.equal(wx.codes.length, 3)
})

/** A platform that answers every request 200 at once and records it (no network). */
function recording () {
  const sent: Array<{ url: string, header: Record<string, string> }> = []
  const storage = new Map<string, unknown>()
  const wx = {
    request: (o: any) => {
      sent.push({ url: o.url, header: o.header })
      const data = o.url.endsWith('/auth/login')
        ? { code: 200, message: 'ok', data: { accessToken: 'AT', refreshToken: 'RT', expiresIn: 900, refreshExpiresIn: 9000, openid: 'o' } }
        : { ok: true }
      setImmediate(() => o.success({ statusCode: 200, data, header: {} }))
    },
    login: (o: any) => setImmediate(() => o.success({ code: 'c' })),
    getStorageSync: (k: string) => storage.get(k) ?? '',
    setStorageSync: (k: string, v: unknown) => { storage.set(k, v) },
    removeStorageSync: (k: string) => { storage.delete(k) }
  }
  return { wx, sent, storage }
}

t.test('the token goes to the gateway under baseUrl only', async (t) => {
  // [url, gets the token, the URL called when not the same]
  const cases: Array<[string, boolean, string?]> = [
    ['/api/x', true, 'https://gw.example.com/base/api/x'],
    ['api/x', true, 'https://gw.example.com/base/api/x'],
    ['https://GW.example.com:443/base/y?q=1', true],
    ['https://gw.example.com/base', true],
    ['//gw.example.com/base/z', true, 'https://gw.example.com/base/z'],
    ['https://gw.example.com/basement', false],
    ['https://gw.example.com/other', false],
    ['http://gw.example.com/base/x', false],
    ['https://gw.example.com:8443/base/x', false],
    ['https://gw.example.com.evil.cn/base/x', false],
    ['https://gw.example.com@evil.cn/base/x', false],
    ['https://gw.example.com\\@evil.cn/base/x', false],
    ['https://evil.cn/base/x', false]
  ]
  const { wx, sent } = recording()
  const c = createClient({ baseUrl: 'https://gw.example.com/base/', wx })
  for (const [url, token, expected = url] of cases) {
    const before = sent.length
    await c.request({ url, header: { Authorization: 'mine' } })
    const last = sent[sent.length - 1]
    t.equal(last.url, expected, url)
    if (token) t.equal(last.header.Authorization, 'Bearer AT', `${url}: token (the caller's own Authorization replaced)`)
    else t.same([sent.length - before, last.header.Authorization], [1, 'mine'], `${url}: no token, no login, headers as given`)
  }
})

t.test('baseUrl and platform are checked at creation', async (t) => {
  const { wx } = recording()
  for (const bad of ['gw.example.com', 'ftp://gw.example.com', 'https://user@gw.example.com', 'https://gw.example.com/?x=1', '']) {
    t.throws(() => createClient({ baseUrl: bad, wx }), TypeError, bad)
  }
  t.throws(() => createClient({ baseUrl: 'https://gw.example.com', wx: {} as any }), TypeError)
})

t.test('logout offline: the tokens are forgotten anyway, the result says the gateway was not reached', async (t) => {
  const { wx, storage } = recording()
  const c = createClient({ baseUrl: 'https://gw.example.com', wx })
  await c.login()
  wx.request = (o: any) => setImmediate(() => o.fail({ errMsg: 'request:fail timeout' }))
  const out = await c.logout()
  t.equal(out.revoked, false)
  t.match(out.error, { code: -1, errMsg: 'request:fail timeout' })
  t.equal(storage.size, 0)
})

t.test('storage that refuses writes: the session lives in memory', async (t) => {
  const { wx, sent } = recording()
  wx.setStorageSync = () => { throw new Error('storage full') }
  const c = createClient({ baseUrl: 'https://gw.example.com', wx })
  await c.request({ url: '/a' })
  await c.request({ url: '/b' })
  t.equal(sent.filter((s) => s.url.endsWith('/auth/login')).length, 1, 'one login')
  t.equal(sent[2].header.Authorization, 'Bearer AT')
})
