/** One file, every kind of mistake: an unset variable, schema problems and rule problems. */
export const SEVEN_MISTAKES = `wechat:
  apps:
    - { appId: wx1, secret: "\${WX_SECRET}" }
tokens:
  keys: [{ kid: k1, secret: "0123456789abcdef0123456789abcdef" }]
routes:
  - name: api
    prefix: /api
    timout: 3s
    upstreams: [{ name: s, url: "http://127.0.0.1:1", weight: 0 }]
    canary: { rollback: { upstream: nope } }
  - name: api
    prefix: /auth/x
    upstreams: [{ name: s, url: "http://127.0.0.1:1", weight: -1 }]
`
export const SEVEN_PROBLEMS = [
  'wechat.apps[0].secret: environment variable WX_SECRET is not set (use ${WX_SECRET:-default} for a default) (line 3)',
  'routes[0].timout: unknown key — did you mean timeout? (line 9)',
  'routes[0].upstreams: at least one upstream needs a weight > 0 (line 10)',
  "routes[0].canary.rollback.upstream: names no upstream of route 'api' (line 11)",
  "routes[1].name: duplicate route name 'api' (also at index 0) (line 12)",
  "routes[1].prefix: '/auth/x' is reserved by the gateway (line 13)",
  'routes[1].upstreams[0].weight: must be >= 0 (line 14)'
]
