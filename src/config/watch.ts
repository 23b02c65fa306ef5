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
 * The files the config references (token key files, `related`) are watched the
 * same way, so a Kubernetes Secret rotation (the same `..data` swap) or a key
 * file replaced in place reloads too; the list is read again after every call,
 * since a reload may name other files.
 *
 * Calls are debounced (`debounceMs`) and serialised: never two at once; a
 * change during a call causes one more call after it. A missing config file
 * (deleted, or between `rm` and the new copy) causes no call: the next create
 * does. A missing key file does cause one: the reload then reports it.
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
  /** Other files the config reads (token key files; relative to the cwd), watched the same way. Asked again after every `onChange`. */
  related?: () => readonly string[]
  logger: Logger
  /** Quiet time after the last event before `onChange` runs, ms. Default 200: an editor's save is several events. */
  debounceMs?: number
  /** Safety-net poll of the files' identity, ms. Default 2000; 0 turns polling off. */
  pollMs?: number
  /** Use fs.watch (inotify/FSEvents). Default true; false relies on polling alone (filesystems without change events). */
  fsWatch?: boolean
  /** Reload. Its errors are logged, never thrown. */
  onChange: () => void | Promise<void>
}

export interface ConfigWatcher {
  /** Resolves once every file is watched and its identity known: a change made after this is seen. Never rejects. */
  readonly ready: Promise<void>
  /** Schedule a reload as if the file had changed (SIGHUP), debounced and serialised with file events. */
  trigger (): void
  /** Stop watching; no `onChange` starts after this (one already running finishes). */
  close (): void
}

/** Kubernetes' AtomicWriter swaps this symlink on every ConfigMap/Secret update. */
const K8S_DATA_LINK = '..data'

/** One watched file: the names in its directory that concern it, and a watch on its inode. */
interface Target {
  file: string
  dir: string
  /** The basename, `..data`, and the first segment of a relative symlink target. */
  names: Set<string>
  fileWatcher?: FSWatcher | undefined
  /** Identity when last handed to onChange (or first seen); undefined: missing. */
  signature?: string | undefined
}

/** Watch `file` (and its related files) and call `onChange` (debounced, never overlapping) when content may have changed. */
export function watchConfig (opts: WatchConfigOptions): ConfigWatcher {
  const log = opts.logger
  const debounceMs = opts.debounceMs ?? 200
  const pollMs = opts.pollMs ?? 2000
  const useFsWatch = opts.fsWatch ?? true

  const newTarget = (path: string): Target => {
    const file = resolve(path)
    return { file, dir: dirname(file), names: new Set([basename(file), K8S_DATA_LINK]) }
  }
  const config = newTarget(opts.file)
  const file = config.file
  /** The config first, then the related files. */
  let targets: Target[] = [config]
  const dirWatchers = new Map<string, FSWatcher>()
  let timer: NodeJS.Timeout | undefined
  let pollTimer: NodeJS.Timeout | undefined
  let running = false
  let again = false
  let closed = false
  let polling = false

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
    for (const target of targets) {
      target.signature = await signature(target.file)
      // The old inode (or ConfigMap dir) may be gone: watch whatever is there now.
      armFile(target)
      await learnLinkName(target)
    }
    if (config.signature === undefined) {
      log.warn({ file }, 'config file is missing; keeping the current config until it reappears')
      return
    }
    if (closed) return
    try {
      await opts.onChange()
    } catch (err) {
      log.error({ err, file }, 'config reload handler failed')
    }
    await syncRelated()
    log.debug({ file, files: targets.length }, 'watching the config files again')
  }

  /** Follow the related list: watch newly named files, stop watching dropped ones. */
  async function syncRelated (): Promise<void> {
    if (opts.related === undefined || closed) return
    let wanted: Set<string>
    try {
      wanted = new Set(opts.related().map((f) => resolve(f)))
    } catch (err) {
      log.warn({ err, file }, 'cannot list the files the config references')
      return
    }
    wanted.delete(file)
    const kept: Target[] = [config]
    for (const target of targets.slice(1)) {
      if (wanted.delete(target.file)) kept.push(target)
      else target.fileWatcher?.close()
    }
    for (const path of wanted) {
      const target = newTarget(path)
      target.signature = await signature(target.file)
      await learnLinkName(target)
      kept.push(target)
      armDir(target.dir)
      armFile(target)
    }
    targets = kept
    // A directory none of the files lives in any more is not watched.
    for (const [dir, w] of dirWatchers) {
      if (!targets.some((x) => x.dir === dir)) {
        w.close()
        dirWatchers.delete(dir)
      }
    }
  }

  /** realpath + inode + mtime + size, or undefined when the file cannot be read. */
  async function signature (path: string): Promise<string | undefined> {
    try {
      const real = await realpath(path)
      const s = await stat(real)
      return `${real}\u0000${s.ino}\u0000${s.mtimeMs}\u0000${s.size}`
    } catch {
      return undefined
    }
  }

  /** A symlink into a sibling (ConfigMap's `..data/gateway.yaml`): that sibling's name matters too. */
  async function learnLinkName (target: Target): Promise<void> {
    try {
      const link = await readlink(target.file)
      if (isAbsolute(link)) return
      const first = link.split(sep)[0]
      if (first !== '' && first !== '.' && first !== '..') target.names.add(first)
    } catch {
      // Not a symlink, or gone: nothing to learn.
    }
  }

  function armDir (dir: string): void {
    if (!useFsWatch || closed || dirWatchers.has(dir)) return
    try {
      // persistent: false — the watch alone must not keep the process alive.
      const w = watch(dir, { persistent: false }, (event, name) => {
        // No name (some platforms): assume it may be ours.
        const n = name?.toString()
        if (n === undefined || targets.some((x) => x.dir === dir && x.names.has(n))) schedule(`${event} ${n ?? '(unnamed)'}`)
        else log.trace({ dir, name: n, event }, 'directory event for another file')
      })
      w.on('error', (err) => {
        log.warn({ err, dir }, 'config directory watch failed; polling until it can be re-armed')
        w.close()
        if (dirWatchers.get(dir) === w) dirWatchers.delete(dir)
      })
      dirWatchers.set(dir, w)
    } catch (err) {
      log.warn({ err, dir }, 'cannot watch the config directory; relying on polling')
    }
  }

  function armFile (target: Target): void {
    if (!useFsWatch || closed) return
    target.fileWatcher?.close()
    target.fileWatcher = undefined
    try {
      // Follows symlinks: watches the inode the file is read from, wherever it lives.
      const w = watch(target.file, { persistent: false }, (event) => schedule(`${event} (${basename(target.file)})`))
      w.on('error', () => {
        // The inode went away (rename, ConfigMap dir deleted): re-armed at the next change.
        w.close()
        if (target.fileWatcher === w) target.fileWatcher = undefined
      })
      target.fileWatcher = w
    } catch {
      // Missing right now; the directory watch or the poll sees it come back.
    }
  }

  async function poll (): Promise<void> {
    if (polling || closed) return
    polling = true
    try {
      for (const target of targets) armDir(target.dir)
      for (const target of targets) {
        const sig = await signature(target.file)
        if (sig !== target.signature && !closed) {
          if (target.fileWatcher === undefined && sig !== undefined) armFile(target)
          target.signature = sig
          schedule(`poll: identity of ${basename(target.file)} changed`)
        }
      }
      log.trace({ file }, 'config files polled')
    } finally {
      polling = false
    }
  }

  armDir(config.dir)
  armFile(config)
  // None rejects: each catches its own errors.
  const ready = Promise.all([
    learnLinkName(config).catch(() => {}),
    signature(file).then((sig) => { config.signature ??= sig }, () => {}),
    syncRelated().catch((err: unknown) => log.warn({ err, file }, 'cannot watch the files the config references'))
  ]).then(() => {})
  if (pollMs > 0) {
    pollTimer = setInterval(() => {
      poll().catch((err: unknown) => log.warn({ err, file }, 'config poll failed'))
    }, pollMs)
    pollTimer.unref()
  }

  return {
    ready,
    trigger (): void {
      schedule('trigger')
    },
    close (): void {
      closed = true
      if (timer !== undefined) clearTimeout(timer)
      if (pollTimer !== undefined) clearInterval(pollTimer)
      for (const w of dirWatchers.values()) w.close()
      dirWatchers.clear()
      for (const target of targets) {
        target.fileWatcher?.close()
        target.fileWatcher = undefined
      }
    }
  }
}
