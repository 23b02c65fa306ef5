/**
 * The store's Lua scripts, registered once per connection with defineCommand.
 * Each touches keys of one hash tag only (one Redis Cluster slot); times come
 * from the caller (`now` in ms), never from the server's clock.
 */
import type { Cluster, Redis } from 'ioredis'

// KEYS: meta, spent. ARGV: hash, curExp, fexp, openid, unionid, appid, created
const CREATE_LUA = `
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'cur', ARGV[1], 'curExp', ARGV[2], 'fexp', ARGV[3],
  'openid', ARGV[4], 'unionid', ARGV[5], 'appid', ARGV[6], 'created', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1`

// KEYS: meta, spent, grace key of the presented hash.
// ARGV: hash, nextHash, payload, now, refreshTtl, graceMs, served appids as '\t<a>\t<b>\t'
// Returns {status, openid, unionid, appid, expiresAt, fexp, created[, payload]}
const ROTATE_LUA = `
local m = redis.call('HMGET', KEYS[1], 'cur', 'curExp', 'fexp', 'revoked', 'openid', 'unionid', 'appid', 'created')
if not m[3] then return {'invalid'} end
if m[4] then return {'revoked'} end
if not string.find(ARGV[7], '\t' .. m[7] .. '\t', 1, true) then return {'foreign', m[7]} end
local now = tonumber(ARGV[4])
local fexp = tonumber(m[3])
local graceMs = tonumber(ARGV[6])
if m[1] == ARGV[1] then
  local curExp = tonumber(m[2])
  if now >= curExp or now >= fexp then return {'expired'} end
  local childExp = math.min(now + tonumber(ARGV[5]), fexp)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], m[2], ARGV[1])
  redis.call('PEXPIREAT', KEYS[2], m[3])
  redis.call('HSET', KEYS[1], 'cur', ARGV[2], 'curExp', string.format('%d', childExp))
  if graceMs > 0 then
    redis.call('SET', KEYS[3], ARGV[4] .. ':' .. string.format('%d', childExp) .. ':' .. ARGV[2] .. ':' .. ARGV[3], 'PX', graceMs)
  end
  return {'rotated', m[5], m[6], m[7], string.format('%d', childExp), m[3], m[8]}
end
local g = redis.call('GET', KEYS[3])
if g then
  local a = string.find(g, ':', 1, true)
  local b = string.find(g, ':', a + 1, true)
  local c = string.find(g, ':', b + 1, true)
  -- a retry of a lost answer: only while the child it produced is still the family's live token
  if string.sub(g, b + 1, c - 1) == m[1] and now - tonumber(string.sub(g, 1, a - 1)) <= graceMs then
    if now >= fexp then return {'expired'} end
    return {'grace', m[5], m[6], m[7], string.sub(g, a + 1, b - 1), m[3], m[8], string.sub(g, c + 1)}
  end
end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if s and tonumber(s) > now then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  redis.call('HDEL', KEYS[1], 'cur', 'curExp')
  redis.call('DEL', KEYS[2])
  return {'reused'}
end
return {'invalid'}`

// KEYS: meta, spent. ARGV: hash, now. Reads only: is `hash` the family's live token, or a spent one not past its expiry?
const HOLDS_LUA = `
local m = redis.call('HMGET', KEYS[1], 'cur', 'revoked', 'fexp')
if not m[3] or m[2] or tonumber(ARGV[2]) >= tonumber(m[3]) then return 'none' end
if m[1] == ARGV[1] then return 'current' end
local s = redis.call('ZSCORE', KEYS[2], ARGV[1])
if s and tonumber(s) > tonumber(ARGV[2]) then return 'spent' end
return 'none'`

// KEYS: meta, spent
const KILL_FAMILY_LUA = `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  redis.call('HDEL', KEYS[1], 'cur', 'curExp')
end
redis.call('DEL', KEYS[2])
return 1`

// KEYS: deny zset. ARGV: member, until, now, channel, message.
// Keeps the highest `until`, drops past entries, keeps the key's TTL >= the longest entry, then tells every instance.
const DENY_LUA = `
local untilMs = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not cur or tonumber(cur) < untilMs then redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local want = untilMs - now
if want > 0 and redis.call('PTTL', KEYS[1]) < want then redis.call('PEXPIRE', KEYS[1], want) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1`

// The state marker: '<id>:<bornAt ms>', written by the first instance that finds none. KEYS: marker.
// ARGV: the value to write if there is none, TTL ms (kept alive by every heartbeat). Returns the marker.
const EPOCH_LUA = `
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return v`

// Login claims: one key per (appId, code) hash, value 'p:<owner>' (claimed), 'd:<outcome>'
// (remembered) or 'r:<outcome>' (a transient failure, for the logins already waiting).
// KEYS: login key. ARGV: owner, ttl ms. Returns {'claimed'} | {'pending'} | {'done', outcome}
const CLAIM_LOGIN_LUA = `
local v = redis.call('GET', KEYS[1])
if v then
  local kind = string.sub(v, 1, 2)
  if kind == 'd:' then return {'done', string.sub(v, 3)} end
  if kind == 'p:' and v ~= 'p:' .. ARGV[1] then return {'pending'} end
end
redis.call('SET', KEYS[1], 'p:' .. ARGV[1], 'PX', ARGV[2])
return {'claimed'}`

// KEYS: login key. ARGV: owner, value ('d:…' or 'r:…'), ttl ms. Only the claim's owner may finish it.
const FINISH_LOGIN_LUA = `
if redis.call('GET', KEYS[1]) ~= 'p:' .. ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`

// KEYS: login key. ARGV: owner.
const RELEASE_LOGIN_LUA = `
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1`

export interface Scripts {
  wgClaimLogin (key: string, ...argv: string[]): Promise<string[]>
  wgFinishLogin (key: string, ...argv: string[]): Promise<number>
  wgReleaseLogin (key: string, ...argv: string[]): Promise<number>
  wgCreate (meta: string, spent: string, ...argv: string[]): Promise<number>
  wgRotate (meta: string, spent: string, grace: string, ...argv: string[]): Promise<string[]>
  wgHolds (meta: string, spent: string, ...argv: string[]): Promise<'current' | 'spent' | 'none'>
  wgKill (meta: string, spent: string): Promise<number>
  wgDeny (zset: string, ...argv: string[]): Promise<number>
  wgEpoch (marker: string, ...argv: string[]): Promise<string>
}

const SCRIPTS: Array<[keyof Scripts, number, string]> = [
  ['wgCreate', 2, CREATE_LUA],
  ['wgRotate', 3, ROTATE_LUA],
  ['wgHolds', 2, HOLDS_LUA],
  ['wgKill', 2, KILL_FAMILY_LUA],
  ['wgDeny', 1, DENY_LUA],
  ['wgEpoch', 1, EPOCH_LUA],
  ['wgClaimLogin', 1, CLAIM_LOGIN_LUA],
  ['wgFinishLogin', 1, FINISH_LOGIN_LUA],
  ['wgReleaseLogin', 1, RELEASE_LOGIN_LUA]
]

/** Register every script on `main`; the same connection, typed with the script commands. */
export function registerScripts (main: Redis | Cluster): (Redis | Cluster) & Scripts {
  for (const [name, numberOfKeys, lua] of SCRIPTS) main.defineCommand(name, { numberOfKeys, lua })
  return main as (Redis | Cluster) & Scripts
}
