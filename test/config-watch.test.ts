import { mkdir, mkdtemp, readFile, rename, rm, symlink, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import pino from 'pino'
import t, { type Test } from 'tap'
import { watchConfig, type ConfigWatcher, type WatchConfigOptions } from '../src/config/watch.js'

/** A temp dir removed after the test. */
async function tempDir (t: Test): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'wegate-watch-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

/** Poll `check` every 10 ms until it holds; fail after `ms` (events should arrive in well under a second). */
async function waitFor (check: () => boolean, what: string, ms = 5000): Promise<void> {
  const until = Date.now() + ms
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for: ${what}`)
    await sleep(10)
  }
}

interface Log { level: number, msg: string, name?: string, why?: string }

interface Harness {
  watcher: ConfigWatcher
  /** What onChange read from the file, one entry per call ('<missing>' if it could not). */
  seen: string[]
  /** Parsed log lines. */
  logs: Log[]
  last (): string | undefined
}

/**
 * Watch `file`; every onChange reads the file as a reload would. fs.watch only (no poll) unless overridden.
 * Resolves once the watcher is ready: a change made after that must be seen.
 */
async function watchHarness (t: Test, file: string, opts: Partial<WatchConfigOptions> = {}): Promise<Harness> {
  const seen: string[] = []
  const logs: Log[] = []
  const destination = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') logs.push(JSON.parse(line))
      cb()
    }
  })
  const logger = pino({ level: 'trace' }, destination)
  const watcher = watchConfig({
    file,
    logger,
    debounceMs: 50,
    pollMs: 0,
    onChange: async () => {
      seen.push(await readFile(file, 'utf8').catch(() => '<missing>'))
    },
    ...opts
  })
  t.teardown(() => watcher.close())
  await watcher.ready
  return { watcher, seen, logs, last: () => seen.at(-1) }
}

t.test('in-place write (same inode) is seen', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const h = await watchHarness(t, file)
  await writeFile(file, 'v2')
  await waitFor(() => h.last() === 'v2', 'v2')
  await writeFile(file, 'v3')
  await waitFor(() => h.last() === 'v3', 'v3')
})

t.test('atomic rename, repeatedly: the watch survives every replaced inode', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v0')
  const h = await watchHarness(t, file)
  for (let i = 1; i <= 5; i++) {
    const tmp = join(dir, `.gateway.yaml.${i}.tmp`)
    await writeFile(tmp, `v${i}`)
    await rename(tmp, file)
    await waitFor(() => h.last() === `v${i}`, `v${i} after rename ${i}`)
  }
  t.notOk(h.seen.includes('<missing>'))
})

t.test('Kubernetes ConfigMap symlink swap (..data), twice', async (t) => {
  const dir = await tempDir(t)
  // The layout kubelet's AtomicWriter creates in a ConfigMap volume.
  const stamp = (n: number) => `..2026_11_25_06_0${n}_00.${1000 + n}`
  await mkdir(join(dir, stamp(1)))
  await writeFile(join(dir, stamp(1), 'gateway.yaml'), 'v1')
  await symlink(stamp(1), join(dir, '..data'))
  await symlink('..data/gateway.yaml', join(dir, 'gateway.yaml'))
  const file = join(dir, 'gateway.yaml')
  t.equal(await readFile(file, 'utf8'), 'v1')
  const h = await watchHarness(t, file)

  for (const n of [2, 3]) {
    // New timestamped dir, then a ..data_tmp link renamed over ..data, then the old dir removed.
    await mkdir(join(dir, stamp(n)))
    await writeFile(join(dir, stamp(n), 'gateway.yaml'), `v${n}`)
    await symlink(stamp(n), join(dir, '..data_tmp'))
    await rename(join(dir, '..data_tmp'), join(dir, '..data'))
    await rm(join(dir, stamp(n - 1)), { recursive: true })
    await waitFor(() => h.last() === `v${n}`, `v${n} after ConfigMap update`)
  }
  t.notOk(h.seen.includes('<missing>'))
})

t.test('ConfigMap: the ..data swap alone is detected, before the old dir is removed', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, '..2026_11_25_06_00_00.1'))
  await writeFile(join(dir, '..2026_11_25_06_00_00.1', 'gateway.yaml'), 'v1')
  await symlink('..2026_11_25_06_00_00.1', join(dir, '..data'))
  await symlink('..data/gateway.yaml', join(dir, 'gateway.yaml'))
  const h = await watchHarness(t, join(dir, 'gateway.yaml'))
  // The old file's inode is untouched: only the directory event on `..data` says anything happened.
  await mkdir(join(dir, '..2026_11_25_06_05_00.2'))
  await writeFile(join(dir, '..2026_11_25_06_05_00.2', 'gateway.yaml'), 'v2')
  await symlink('..2026_11_25_06_05_00.2', join(dir, '..data_tmp'))
  await rename(join(dir, '..data_tmp'), join(dir, '..data'))
  await waitFor(() => h.last() === 'v2', 'v2 after the ..data swap')
})

t.test('a symlink to a file in another directory: replacing the target is seen', async (t) => {
  const dir = await tempDir(t)
  await mkdir(join(dir, 'etc'))
  await mkdir(join(dir, 'srv'))
  const target = join(dir, 'srv', 'gateway.yaml')
  await writeFile(target, 'v1')
  await symlink(target, join(dir, 'etc', 'gateway.yaml'))
  // Nothing happens in etc/: only the watch on the file (re-armed on each new inode) can tell.
  const h = await watchHarness(t, join(dir, 'etc', 'gateway.yaml'))
  for (let i = 2; i <= 4; i++) {
    await writeFile(join(dir, 'srv', 'tmp'), `v${i}`)
    await rename(join(dir, 'srv', 'tmp'), target)
    await waitFor(() => h.last() === `v${i}`, `v${i} after replacing the target`)
  }
  await writeFile(target, 'v5')
  await waitFor(() => h.last() === 'v5', 'v5 written in place')
})

t.test('a burst of 10 writes is coalesced, and the final content is seen', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v0')
  const h = await watchHarness(t, file, { debounceMs: 200 })
  for (let i = 1; i <= 10; i++) await writeFile(file, `v${i}`)
  await waitFor(() => h.last() === 'v10', 'v10')
  t.ok(h.seen.length >= 1 && h.seen.length < 10, `${h.seen.length} call(s) for 10 writes`)
})

t.test('calls never overlap; a change during a call causes one more call', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  let active = 0
  let maxActive = 0
  const seen: string[] = []
  let release: () => void = () => {}
  const gate = new Promise<void>((resolve) => { release = resolve })
  const h = await watchHarness(t, file, {
    onChange: async () => {
      active++
      maxActive = Math.max(maxActive, active)
      seen.push(await readFile(file, 'utf8'))
      if (seen.length === 1) await gate // the first reload is slow
      active--
    }
  })
  await writeFile(file, 'v2')
  await waitFor(() => seen.length === 1, 'first call')
  await writeFile(file, 'v3')
  await writeFile(file, 'v4')
  // The changes arrived while the first call was running: wait for the watcher to notice them.
  await waitFor(() => h.logs.some((l) => l.msg === 'config reload running; will run again after it'), 'deferred while running')
  t.equal(seen.length, 1, 'no second call while the first runs')
  release()
  await waitFor(() => seen.at(-1) === 'v4', 'the follow-up call sees v4')
  t.equal(maxActive, 1)
})

t.test('close() stops callbacks', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const closed = await watchHarness(t, file)
  await writeFile(file, 'v2')
  await waitFor(() => closed.last() === 'v2', 'v2 before close')
  const callsBefore = closed.seen.length
  closed.watcher.close()
  closed.watcher.trigger() // no effect after close
  // A control watcher with the same debounce: once it has fired for a change,
  // the closed one would have fired too.
  const control = await watchHarness(t, file)
  await writeFile(file, 'v3')
  const tmp = join(dir, 'tmp')
  await writeFile(tmp, 'v4')
  await rename(tmp, file)
  await waitFor(() => control.last() === 'v4', 'control sees v4')
  t.equal(closed.seen.length, callsBefore, 'no call after close(), neither from the file nor from trigger()')
})

t.test('file deleted, then recreated: no reload of a missing file; the new content is seen', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const h = await watchHarness(t, file)
  await unlink(file)
  await waitFor(() => h.logs.some((l) => l.level === 40 && /missing/.test(l.msg)), 'warning about the missing file')
  t.equal(h.seen.length, 0, 'onChange not called for a missing file')
  await writeFile(file, 'v2')
  await waitFor(() => h.last() === 'v2', 'v2 after recreate')
  // And the recreated file is watched like the first one.
  await writeFile(file, 'v3')
  await waitFor(() => h.last() === 'v3', 'v3')
  t.notOk(h.seen.includes('<missing>'))
})

t.test('polling alone catches a change when fs events never come', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const h = await watchHarness(t, file, { fsWatch: false, pollMs: 50 })
  const tmp = join(dir, 'tmp')
  await writeFile(tmp, 'v2')
  await rename(tmp, file)
  await waitFor(() => h.last() === 'v2', 'v2 by polling (new inode)')
  await writeFile(file, 'v3 longer')
  await waitFor(() => h.last() === 'v3 longer', 'v3 by polling (new size)')
  t.equal(h.seen.length, 2, 'one call per change: an unchanged file is not reloaded')
})

t.test('a failing onChange is logged and the watch goes on', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const seen: string[] = []
  const h = await watchHarness(t, file, {
    onChange: async () => {
      const text = await readFile(file, 'utf8')
      seen.push(text)
      if (text === 'bad') throw new Error('boom')
    }
  })
  await writeFile(file, 'bad')
  await waitFor(() => h.logs.some((l) => l.level === 50 && l.msg === 'config reload handler failed'), 'error logged')
  await writeFile(file, 'good')
  await waitFor(() => seen.at(-1) === 'good', 'next change still handled')
})

t.test('trigger() (SIGHUP) runs onChange without a file change', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const h = await watchHarness(t, file)
  h.watcher.trigger()
  await waitFor(() => h.seen.length === 1, 'a call')
  t.same(h.seen, ['v1'])
})

t.test('a watched directory that does not exist does not throw', async (t) => {
  const dir = await tempDir(t)
  const h = await watchHarness(t, join(dir, 'nope', 'gateway.yaml'))
  await waitFor(() => h.logs.some((l) => l.level === 40 && /directory/.test(l.msg)), 'warning about the directory')
  t.equal(h.seen.length, 0)
})

t.test('a related file (token key) changed in place: onChange runs, the config file untouched', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  const key = join(dir, 'signing.pem')
  await writeFile(file, 'v1')
  await writeFile(key, 'key1')
  const h = await watchHarness(t, file, { related: () => [key] })
  await writeFile(key, 'key2')
  await waitFor(() => h.seen.length === 1, 'a call for the key file')
  await writeFile(key, 'key3')
  await waitFor(() => h.seen.length === 2, 'and for the next change')
})

t.test('a related file in a Kubernetes Secret volume elsewhere: the ..data swap alone reloads', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  await writeFile(file, 'v1')
  const secret = join(dir, 'secret')
  await mkdir(join(secret, '..2026_11_25_06_00_00.1'), { recursive: true })
  await writeFile(join(secret, '..2026_11_25_06_00_00.1', 'signing.pem'), 'key1')
  await symlink('..2026_11_25_06_00_00.1', join(secret, '..data'))
  await symlink('..data/signing.pem', join(secret, 'signing.pem'))
  const h = await watchHarness(t, file, { related: () => [join(secret, 'signing.pem')] })
  await mkdir(join(secret, '..2026_11_25_06_05_00.2'))
  await writeFile(join(secret, '..2026_11_25_06_05_00.2', 'signing.pem'), 'key2')
  await symlink('..2026_11_25_06_05_00.2', join(secret, '..data_tmp'))
  await rename(join(secret, '..data_tmp'), join(secret, '..data'))
  await waitFor(() => h.seen.length === 1, 'a call after the Secret swap')
})

t.test('the related list is read again after each call: a newly named file is watched, a dropped one is not', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  const old = join(dir, 'old.pem')
  const fresh = join(dir, 'new.pem')
  await writeFile(file, 'v1')
  await writeFile(old, 'a')
  await writeFile(fresh, 'b')
  let related = [old]
  const h = await watchHarness(t, file, { related: () => related })
  related = [fresh] // what the reload below loads
  await writeFile(file, 'v2')
  // after the call, the watcher reads the related list again and arms the new file
  await waitFor(() => h.seen.length === 1 && h.logs.some((l) => l.msg === 'watching the config files again'), 'the config change')
  await writeFile(fresh, 'b2')
  await waitFor(() => h.seen.length === 2, 'the newly named file is watched')
  await writeFile(old, 'a2')
  // The directory watch reports the write and passes it over; nothing else watches the file any more.
  await waitFor(() => h.logs.some((l) => l.msg === 'directory event for another file' && l.name === 'old.pem'), 'the event on old.pem')
  t.notOk(h.logs.some((l) => l.why?.includes('old.pem')), 'no reload scheduled for the dropped file')
  h.watcher.trigger()
  await waitFor(() => h.seen.length === 3, 'a reload triggered after it')
  t.equal(h.seen.length, 3, 'the dropped file caused none')
})

t.test('polling alone catches a related file replaced', async (t) => {
  const dir = await tempDir(t)
  const file = join(dir, 'gateway.yaml')
  const key = join(dir, 'signing.pem')
  await writeFile(file, 'v1')
  await writeFile(key, 'key1')
  const h = await watchHarness(t, file, { fsWatch: false, pollMs: 50, related: () => [key] })
  await writeFile(join(dir, 'tmp'), 'key2 longer')
  await rename(join(dir, 'tmp'), key)
  await waitFor(() => h.seen.length === 1, 'a call by polling')
  // Three more polls of the unchanged files (and the debounce, shorter than one poll) call nothing.
  const polled = () => h.logs.filter((l) => l.msg === 'config files polled').length
  const after = polled()
  await waitFor(() => polled() >= after + 3, 'three more polls')
  t.equal(h.seen.length, 1, 'one call per change')
})
