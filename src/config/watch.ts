/**
 * Watch gateway.yaml and call `onChange` when its content may have changed,
 * however it was replaced:
 *
 * - in-place write: the directory watch sees a change event for the basename
 *   (and the file watch sees it on the inode);
 * - atomic rename (editors, `sed -i`, `mv tmp gateway.yaml`): the old inode is
 *   gone, so a watch on the file alone goes deaf after the first rename on
 *   Linux. The directory watch sees the rename by name; the file watch is
 *   re-armed on the new inode before every `onChange`;
 * - Kubernetes ConfigMap volume: `gateway.yaml -> ..data/gateway.yaml` and
 *   `..data -> ..<timestamp>`; an update renames a new `..data_tmp` symlink
 *   over `..data`, so the event carries the name `..data`, never `gateway.yaml`.
 *   Names of interest are the basename, `..data`, and the first segment of the
 *   file's own symlink target when it lives in the same directory;
 * - anything inotify misses (network and FUSE filesystems): a poll every
 *   `pollMs` of realpath + inode + mtime + size.
 *
 * Calls are debounced (`debounceMs`) and serialised: never two at once; a
 * change during a call causes one more call after it. A missing file (deleted,
 * or between `rm` and the new copy) causes no call: the next create does.
 * Whether the content really changed is the caller's check (it has the hash of
 * the active config). Nothing here throws after start: errors are logged.
 */
import { watch, type FSWatcher } from 'node:fs'
import { readlink, realpath, stat } from 'node:fs/promises'
import { basename, dirname, isAbsolute, resolve, sep } from 'node:path'
import type { Logger } from 'pino'

export interface WatchConfigOptions {
  /** The config file (as given on the command line; relative to the cwd). */
  file: string
  logger: Logger
  /** Quiet time after the last event before `onChange` runs, ms. Default 200: an editor's save is several events. */
  debounceMs?: number
  /** Safety-net poll of the file's identity, ms. Default 2000; 0 turns polling off. */
  pollMs?: number
  /** Use fs.watch (inotify/FSEvents). Default true; false relies on polling alone (filesystems without change events). */
  fsWatch?: boolean
  /** Reload. Its errors are logged, never thrown. */
  onChange: () => void | Promise<void>
}

export interface ConfigWatcher {
  /** Schedule a reload as if the file had changed (SIGHUP), debounced and serialised with file events. */
  trigger (): void
  /** Stop watching; no `onChange` starts after this (one already running finishes). */
  close (): void
}

/** Kubernetes' AtomicWriter swaps this symlink on every ConfigMap/Secret update. */
const K8S_DATA_LINK = '..data'

/** Watch `file` and call `onChange` (debounced, never overlapping) when its content may have changed. */
export function watchConfig (opts: WatchConfigOptions): ConfigWatcher {
  const file = resolve(opts.file)
  const dir = dirname(file)
  const base = basename(file)
  const log = opts.logger
  const debounceMs = opts.debounceMs ?? 200
  const pollMs = opts.pollMs ?? 2000
  const useFsWatch = opts.fsWatch ?? true

  const names = new Set([base, K8S_DATA_LINK])
  let dirWatcher: FSWatcher | undefined
  let fileWatcher: FSWatcher | undefined
  let timer: NodeJS.Timeout | undefined
  let pollTimer: NodeJS.Timeout | undefined
  let running = false
  let again = false
  let closed = false
  let polling = false
  // Identity of the file when last handed to onChange (or first seen).
  let lastSignature: string | undefined

  function schedule (why: string): void {
    if (closed) return
    log.debug({ file, why }, 'config file may have changed')
    if (timer !== undefined) clearTimeout(timer)
    timer = setTimeout(fire, debounceMs)
    timer.unref()
  }

  function fire (): void {
    timer = undefined
    if (closed) return
    if (running) {
      log.debug({ file }, 'config reload running; will run again after it')
      again = true
      return
    }
    running = true
    run().catch((err: unknown) => {
      log.error({ err, file }, 'config watcher failed')
    }).finally(() => {
      running = false
      if (again && !closed) {
        again = false
        schedule('changed during reload')
      }
    })
  }

  async function run (): Promise<void> {
    const sig = await signature()
    lastSignature = sig
    // The old inode (or ConfigMap dir) may be gone: watch whatever is there now.
    armFile()
    await learnLinkName()
    if (sig === undefined) {
      log.warn({ file }, 'config file is missing; keeping the current config until it reappears')
      return
    }
    if (closed) return
    try {
      await opts.onChange()
    } catch (err) {
      log.error({ err, file }, 'config reload handler failed')
    }
  }

  /** realpath + inode + mtime + size, or undefined when the file cannot be read. */
  async function signature (): Promise<string | undefined> {
    try {
      const real = await realpath(file)
      const s = await stat(real)
      return `${real}\u0000${s.ino}\u0000${s.mtimeMs}\u0000${s.size}`
    } catch {
      return undefined
    }
  }

  /** A symlink into a sibling (ConfigMap's `..data/gateway.yaml`): that sibling's name matters too. */
  async function learnLinkName (): Promise<void> {
    try {
      const target = await readlink(file)
      if (isAbsolute(target)) return
      const first = target.split(sep)[0]
      if (first !== '' && first !== '.' && first !== '..') names.add(first)
    } catch {
      // Not a symlink, or gone: nothing to learn.
    }
  }

  function armDir (): void {
    if (!useFsWatch || closed || dirWatcher !== undefined) return
    try {
      // persistent: false — the watch alone must not keep the process alive.
      const w = watch(dir, { persistent: false }, (event, name) => {
        // No name (some platforms): assume it may be ours.
        if (name === null || names.has(name.toString())) schedule(`${event} ${name ?? '(unnamed)'}`)
      })
      w.on('error', (err) => {
        log.warn({ err, dir }, 'config directory watch failed; polling until it can be re-armed')
        w.close()
        if (dirWatcher === w) dirWatcher = undefined
      })
      dirWatcher = w
    } catch (err) {
      log.warn({ err, dir }, 'cannot watch the config directory; relying on polling')
    }
  }

  function armFile (): void {
    if (!useFsWatch || closed) return
    fileWatcher?.close()
    fileWatcher = undefined
    try {
      // Follows symlinks: watches the inode the config is read from, wherever it lives.
      const w = watch(file, { persistent: false }, (event) => schedule(`${event} (file)`))
      w.on('error', () => {
        // The inode went away (rename, ConfigMap dir deleted): re-armed at the next change.
        w.close()
        if (fileWatcher === w) fileWatcher = undefined
      })
      fileWatcher = w
    } catch {
      // Missing right now; the directory watch or the poll sees it come back.
    }
  }

  async function poll (): Promise<void> {
    if (polling || closed) return
    polling = true
    try {
      armDir()
      const sig = await signature()
      if (sig !== lastSignature && !closed) {
        if (fileWatcher === undefined && sig !== undefined) armFile()
        lastSignature = sig
        schedule('poll: file identity changed')
      }
    } finally {
      polling = false
    }
  }

  armDir()
  armFile()
  // Neither rejects: both catch their own errors.
  learnLinkName().catch(() => {})
  signature().then((sig) => { lastSignature ??= sig }, () => {})
  if (pollMs > 0) {
    pollTimer = setInterval(() => {
      poll().catch((err: unknown) => log.warn({ err, file }, 'config poll failed'))
    }, pollMs)
    pollTimer.unref()
  }

  return {
    trigger (): void {
      schedule('trigger')
    },
    close (): void {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      if (pollTimer !== undefined) clearInterval(pollTimer)
      dirWatcher?.close()
      fileWatcher?.close()
      dirWatcher = undefined
      fileWatcher = undefined
    }
  }
}
