/**
 * Path rules shared by the config loader (which refuses prefixes that break
 * them) and the route table (which relies on them): one definition each.
 */

/**
 * The gateway's own namespaces: `/auth`, `/auth/…`, `/.well-known`, `/.well-known/…`
 * (a normalised path; case-sensitive like every match). No route prefix may claim
 * them, and a root route `/` does not receive them: whatever the gateway does not
 * serve there is a 404, never proxied.
 */
export function isReservedPath (path: string): boolean {
  const c = path.charCodeAt(1)
  if (c === 0x61 /* a */) return path.startsWith('/auth') && (path.length === 5 || path.charCodeAt(5) === 0x2f)
  if (c === 0x2e /* . */) return path.startsWith('/.well-known') && (path.length === 12 || path.charCodeAt(12) === 0x2f)
  return false
}

/** `/api/orders/` and `/api/orders` are the same prefix; `/` stays `/`. */
export function normalisePrefix (prefix: string): string {
  let end = prefix.length
  while (end > 1 && prefix.charCodeAt(end - 1) === 0x2f) end--
  return end === prefix.length ? prefix : prefix.slice(0, end)
}
