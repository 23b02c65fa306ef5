/**
 * The sessions service's policy, over the memory store and a real Redis: reuse
 * revokes the family (access tokens included), a family born before a logout-all
 * is over at its next refresh, logout ends another family only when the caller
 * holds one of its tokens. Time is a clock the test moves.
 */
import t, { type Test } from 'tap'
import { createTokenService, type AccessClaims } from '../src/auth/tokens.js'
import { createSessions, type Sessions } from '../src/auth/sessions.js'
import type { TokensConfig } from '../src/config/schema.js'
import { createMetrics } from '../src/metrics/index.js'
import { createStore, type Store, type StoreLogger } from '../src/store/index.js'
import type { StoreConfig } from '../src/config/schema.js'
import { startRedis } from './helpers/redis.js'

const MIN = 60_000
const silent: StoreLogger = { info () {}, warn () {}, error () {} }
const log = { warn () {} }
const cfg: TokensConfig = {
  issuer: 'wegate',
  audience: 'miniprogram',
  algorithm: 'HS256',
  keys: [{ kid: 'k1', secret: 'sessions-secret-0123456789-0123456789' }],
  accessTtl: 15 * MIN,
  refreshTtl: 7 * 24 * 60 * MIN,
  sessionTtl: 30 * 24 * 60 * MIN,
  refreshGrace: 10_000,
  sessionKeyTtl: 3 * 24 * 60 * MIN,
  clockSkew: 30_000
}
const APPS = ['wxapp']

const redis = await startRedis()
t.teardown(redis.stop)
let prefixes = 0
const stores: Array<[string, (now: () => number) => Store]> = [
  ['memory', (now) => createStore({ type: 'memory', keyPrefix: 'wegate:', failMode: 'closed', maxEntries: 1000 } as StoreConfig, silent, { now })],
  ['redis', (now) => createStore({ type: 'redis', url: redis.url, keyPrefix: `s${++prefixes}:`, failMode: 'closed', maxEntries: 1000 } as StoreConfig, silent, { now })]
]

async function stack (t: Test, make: (now: () => number) => Store) {
  // frozen at a whole second plus a bit: tokens' iat (seconds) then sit after the store's start
  let time = Math.floor(Date.now() / 1000) * 1000 + 500
  const now = () => time
  const store = make(now)
  t.teardown(() => store.close())
  await store.ready()
  const tokens = await createTokenService(cfg, { now })
  const sessions: Sessions = createSessions({ store, metrics: createMetrics(), now })
  const claimsOf = (accessToken: string): AccessClaims => tokens.verifyAccess(accessToken)
  const denied = (accessToken: string): boolean => {
    const c = claimsOf(accessToken)
    return store.isRevoked({ jti: c.jti, fid: c.fid, appid: c.appid, openid: c.openid, iatMs: c.iat * 1000 })
  }
  const login = (openid: string) => sessions.start(tokens, cfg, { appid: 'wxapp', openid, unionid: undefined }, { sessionKey: 'sk' })
  const refresh = (token: string) => sessions.refresh(tokens, cfg, token, APPS, log)
  return { store, tokens, sessions, denied, login, refresh, claimsOf, advance: (ms: number) => { time += ms } }
}

for (const [name, make] of stores) {
  t.test(`${name}: reuse after the grace window revokes the family, its access tokens included`, async (t) => {
    const s = await stack(t, make)
    const r1 = await s.login('o-reuse')
    const r2 = await s.refresh(r1.refreshToken)
    s.advance(11_000) // past the 10 s grace
    await t.rejects(s.refresh(r1.refreshToken), { name: 'GatewayError', errorName: 'REFRESH_REUSED' })
    await t.rejects(s.refresh(r2.refreshToken), { name: 'GatewayError', errorName: 'REFRESH_INVALID' }, 'the live child died with it')
    t.ok(s.denied(r1.accessToken) && s.denied(r2.accessToken), 'every access token of the family is denied')
    const other = await s.login('o-reuse')
    t.notOk(s.denied(other.accessToken), 'another login of the same user is not')
  })

  t.test(`${name}: a spent token replayed after its child was spent is reuse within the grace window too`, async (t) => {
    const s = await stack(t, make)
    const r1 = await s.login('o-replay')
    const r2 = await s.refresh(r1.refreshToken)
    const r3 = await s.refresh(r2.refreshToken)
    await t.rejects(s.refresh(r1.refreshToken), { name: 'GatewayError', errorName: 'REFRESH_REUSED' })
    t.ok(s.denied(r3.accessToken), 'the newest access token is denied')
  })

  t.test(`${name}: logout-all ends families born before it at their next refresh; later logins work`, async (t) => {
    const s = await stack(t, make)
    const old = await s.login('o-all')
    s.advance(2000)
    await s.sessions.logout(s.tokens, cfg, s.claimsOf((await s.login('o-all')).accessToken), { all: true })
    t.ok(s.denied(old.accessToken), 'an older access token is denied')
    await t.rejects(s.refresh(old.refreshToken), { name: 'GatewayError', errorName: 'REFRESH_INVALID' }, 'the older family is over')
    s.advance(2000)
    const fresh = await s.login('o-all')
    t.notOk(s.denied(fresh.accessToken))
    t.ok(await s.refresh(fresh.refreshToken), 'a later login refreshes')
  })

  t.test(`${name}: logout ends another family only when the caller holds one of its tokens`, async (t) => {
    const s = await stack(t, make)
    const me = await s.login('o-me')
    const phone = await s.login('o-me')
    const spentFamily = await s.login('o-me')
    await s.refresh(spentFamily.refreshToken) // its first token is now spent: still held
    const stranger = await s.login('o-stranger')
    const fid = stranger.refreshToken.split('.')[0]!
    const madeUp = `${fid}.${'A'.repeat(43)}`
    await s.sessions.logout(s.tokens, cfg, s.claimsOf(me.accessToken), { refreshToken: madeUp, all: false })
    t.ok(s.denied(me.accessToken), 'the caller is logged out')
    t.notOk(s.denied(stranger.accessToken), 'a family id with a made-up secret ends nothing')
    t.ok(await s.refresh(stranger.refreshToken), 'and spends nothing')
    const me2 = await s.login('o-me')
    await s.sessions.logout(s.tokens, cfg, s.claimsOf(me2.accessToken), { refreshToken: phone.refreshToken, all: false })
    t.ok(s.denied(phone.accessToken), 'a held live token ends its family')
    await t.rejects(s.refresh(phone.refreshToken), { name: 'GatewayError', errorName: 'REFRESH_INVALID' })
    const me3 = await s.login('o-me')
    await s.sessions.logout(s.tokens, cfg, s.claimsOf(me3.accessToken), { refreshToken: spentFamily.refreshToken, all: false })
    t.ok(s.denied(spentFamily.accessToken), 'a held spent token too')
  })
}
