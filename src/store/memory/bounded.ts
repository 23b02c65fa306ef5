/** The entry under `key` unless it has expired (an expired one is dropped). */
export function liveGet<K, V extends { expiresAt: number }> (map: Map<K, V>, key: K, t: number): V | undefined {
  const e = map.get(key)
  if (e === undefined || e.expiresAt > t) return e
  map.delete(key)
  return undefined
}

/** Insert and keep the map within `max` entries, evicting the oldest insertion; true when one was evicted. */
export function boundedSet<K, V> (map: Map<K, V>, key: K, value: V, max: number): boolean {
  map.delete(key) // re-insert at the end: the entry is the newest again
  map.set(key, value)
  if (map.size <= max) return false
  const oldest = map.keys().next()
  if (!oldest.done) map.delete(oldest.value)
  return true
}
