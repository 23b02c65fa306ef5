/**
 * The emulator's web and App login: the authorize / qrconnect pages and
 * GET /sns/oauth2/access_token, over real sockets.
 */
import t from 'tap'
import { request } from 'undici'
import { createWeChatEmulator } from '../src/emulator/wechat.js'

const MP = { appId: 'wxmp000000000000001', secret: 'mp-secret' }
const H5 = { appId: 'wxh5000000000000001', secret: 'h5-secret' }
const OTHER = { appId: 'wxother0000000000001', secret: 'other-secret', openAccount: 'another-company' }

async function start (t: { teardown: (fn: () => unknown) => void }) {
  const emu = createWeChatEmulator({ apps: [MP, H5, OTHER] })
  const base = await emu.listen()
  t.teardown(() => emu.close())
  return { emu, base }
}

async function getText (url: string) {
  const r = await request(url)
  return { status: r.statusCode, type: String(r.headers['content-type']), location: r.headers.location as string | undefined, text: await r.body.text() }
}

const exchangeUrl = (base: string, app: { appId: string, secret: string }, code: string) =>
  `${base}/sns/oauth2/access_token?appid=${app.appId}&secret=${app.secret}&code=${encodeURIComponent(code)}&grant_type=authorization_code`

t.test('the authorize page sends the browser back with a deterministic code for the chosen user, or none when refused', async (t) => {
  const { base } = await start(t)
  const page = `${base}/connect/oauth2/authorize?appid=${H5.appId}&redirect_uri=${encodeURIComponent('https://gw.example.com/auth/wechat/callback?x=1')}&response_type=code&scope=snsapi_userinfo&state=st1`
  const choose = await getText(page)
  t.equal(choose.status, 200)
  t.match(choose.type, /text\/html/)
  t.match(choose.text, /user=alice/)
  t.match(choose.text, /refuse=1/)

  const a1 = await getText(page + '&user=alice')
  const a2 = await getText(page + '&user=alice')
  t.equal(a1.status, 302)
  const back = new URL(a1.location!)
  t.equal(back.origin + back.pathname, 'https://gw.example.com/auth/wechat/callback')
  t.equal(back.searchParams.get('x'), '1', 'the redirect_uri\'s own query is kept')
  t.equal(back.searchParams.get('state'), 'st1')
  t.match(back.searchParams.get('code'), /^u-alice-[0-9a-f]{16}$/)
  t.equal(a2.location, a1.location, 'deterministic')

  const refused = await getText(page + '&refuse=1')
  t.equal(refused.status, 302)
  const r = new URL(refused.location!)
  t.equal(r.searchParams.get('code'), null)
  t.equal(r.searchParams.get('state'), 'st1')

  const qr = await getText(`${base}/connect/qrconnect?appid=${H5.appId}&redirect_uri=https%3A%2F%2Fgw%2Fcb&response_type=code&scope=snsapi_login&state=s&user=bob`)
  t.equal(qr.status, 302)
  t.match(new URL(qr.location!).searchParams.get('code'), /^u-bob-/)
  t.equal((await getText(`${base}/connect/qrconnect?appid=${H5.appId}&redirect_uri=https%3A%2F%2Fgw%2Fcb&response_type=code&scope=snsapi_base&state=s&user=bob`)).status, 400, 'qrconnect takes snsapi_login only')
  t.equal((await getText(`${base}/connect/oauth2/authorize?appid=wxnope&redirect_uri=https%3A%2F%2Fgw%2Fcb&response_type=code&scope=snsapi_base&state=s&user=bob`)).status, 400)
})

t.test('sns/oauth2/access_token: tokens and ids, text/plain, and every errcode', async (t) => {
  const { emu, base } = await start(t)
  const ok = await getText(exchangeUrl(base, H5, 'u-alice-1'))
  t.equal(ok.status, 200)
  t.equal(ok.type, 'text/plain')
  const body = JSON.parse(ok.text) as Record<string, unknown>
  t.match(body, { access_token: /.+/, expires_in: 7200, refresh_token: /.+/, openid: /^o.{27}$/, scope: 'snsapi_userinfo', unionid: /^o.{27}$/ })

  const errcode = async (app: { appId: string, secret: string }, code: string) => {
    const r = await getText(exchangeUrl(base, app, code))
    t.equal(r.type, 'text/plain')
    return (JSON.parse(r.text) as { errcode: number, errmsg: string })
  }
  t.match(await errcode(H5, 'u-alice-1'), { errcode: 40163, errmsg: /^code been used, rid: / }, 'single use')
  t.match(await errcode(H5, 'err40029-x'), { errcode: 40029, errmsg: /^invalid code/ })
  t.match(await errcode(H5, 'err40163-x'), { errcode: 40163 })
  t.match(await errcode({ ...H5, secret: 'wrong' }, 'u-a-2'), { errcode: 40125, errmsg: /^invalid appsecret/ })
  t.match(await errcode({ appId: 'wxnope', secret: 'x' }, 'u-a-3'), { errcode: 40013 })
  t.match(await errcode(H5, 'err-1-x'), { errcode: -1, errmsg: /^system error/ })
  t.match(await errcode(H5, 'busyonce-1'), { errcode: -1 })
  t.match(JSON.parse((await getText(exchangeUrl(base, H5, 'busyonce-1'))).text), { openid: /.+/ }, 'busyonce: the retry succeeds')
  t.equal(emu.oauthCalls, 9)
})

t.test('one user, one unionid across the apps of an open platform account (mini program and H5 alike); per-app openids', async (t) => {
  const { base } = await start(t)
  const mp = JSON.parse((await getText(`${base}/sns/jscode2session?appid=${MP.appId}&secret=${MP.secret}&js_code=u-alice-7&grant_type=authorization_code`)).text) as Record<string, string>
  const h5 = JSON.parse((await getText(exchangeUrl(base, H5, 'u-alice-8'))).text) as Record<string, string>
  const other = JSON.parse((await getText(exchangeUrl(base, OTHER, 'u-alice-9'))).text) as Record<string, string>
  t.equal(h5.unionid, mp.unionid)
  t.not(h5.openid, mp.openid)
  t.not(other.unionid, mp.unionid, 'another open platform account: another unionid')
})
