/**
 * Every Redis key of the store, under `store.keyPrefix`. Braces are Redis Cluster
 * hash tags: a family's keys share one slot (one Lua script per operation), the
 * deny lists and the state marker share `{rv}` (whatever loses one loses all).
 * keyPrefix cannot hold braces, so it never moves a key's hash tag.
 */
export interface RedisKeys {
  /** Pub/sub channel of revocations and rollback announcements. */
  channel: string
  deny: { jti: string, fid: string, user: string, rollback: string, epoch: string }
  family (fid: string): { meta: string, spent: string, grace: (hash: string) => string }
  sessionKey (appid: string, openid: string): string
  login (key: string): string
  /** A single-use entry of a browser login (`state:<hash>`, `ticket:<hash>`). */
  once (kind: string, key: string): string
  grant (appid: string, openid: string): string
  /** A route's rollout: its record, decision lease and per-window reports share the route's slot. */
  rollout (route: string): { record: string, lease: string, window: (id: string) => string }
}

export function redisKeys (p: string): RedisKeys {
  return {
    channel: `${p}revocations`,
    deny: { jti: `${p}{rv}:jti`, fid: `${p}{rv}:fid`, user: `${p}{rv}:user`, rollback: `${p}{rv}:rollback`, epoch: `${p}{rv}:epoch` },
    family: (fid) => ({
      meta: `${p}{fam:${fid}}:meta`,
      spent: `${p}{fam:${fid}}:spent`,
      grace: (hash) => `${p}{fam:${fid}}:grace:${hash}`
    }),
    sessionKey: (appid, openid) => `${p}{u:${appid}:${openid}}:sk`,
    login: (key) => `${p}{login:${key}}`,
    once: (kind, key) => `${p}{once:${kind}:${key}}`,
    grant: (appid, openid) => `${p}{u:${appid}:${openid}}:grant`,
    rollout: (route) => ({
      record: `${p}{ro:${route}}:record`,
      lease: `${p}{ro:${route}}:lease`,
      window: (id) => `${p}{ro:${route}}:w:${id}`
    })
  }
}
