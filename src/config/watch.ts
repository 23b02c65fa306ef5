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
  const watcher = new Watcher(opts)
  // A plain object, as before: its methods work detached (`const { close } = …`).
  return { ready: watcher.start(), trigger: () => watcher.trigger(), close: () => watcher.close() }
}

function newTarget (path: string): Target {
  const file = resolve(path)
  return { file, dir: dirname(file), names: new Set([basename(file), K8S_DATA_LINK]) }
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

/** The watches, the poll and the debounced, serialised reload of one config file and its related files. */
class Watcher {
  private readonly log: Logger
  private readonly debounceMs: number
  private readonly pollMs: number
  private readonly useFsWatch: boolean
  private readonly config: Target
  private readonly file: string
  /** The config first, then the related files. */
  private targets: Target[]
  private readonly dirWatchers = new Map<string, FSWatcher>()
  private timer: NodeJS.Timeout | undefined
  private pollTimer: NodeJS.Timeout | undefined
  private running = false
  private again = false
  private closed = false
  private polling = false

  constructor (private readonly opts: WatchConfigOptions) {
    this.log = opts.logger
    this.debounceMs = opts.debounceMs ?? 200
    this.pollMs = opts.pollMs ?? 2000
    this.useFsWatch = opts.fsWatch ?? true
    this.config = newTarget(opts.file)
    this.file = this.config.file
    this.targets = [this.config]
  }

  /** Arm the watches and start the poll; resolves (never rejects) once every file's identity is known. */
  start (): Promise<void> {
    const { config, file, log } = this
    this.armDir(config.dir)
    this.armFile(config)
    // None rejects: each catches its own errors.
    const ready = Promise.all([
      learnLinkName(config).catch(() => {}),
      signature(file).then((sig) => { config.signature ??= sig }, () => {}),
      this.syncRelated().catch((err: unknown) => log.warn({ err, file }, 'cannot watch the files the config references'))
    ]).then(() => {})
    if (this.pollMs > 0) {
      this.pollTimer = setInterval(() => {
        this.poll().catch((err: unknown) => log.warn({ err, file }, 'config poll failed'))
      }, this.pollMs)
      this.pollTimer.unref()
    }
    return ready
  }

  /** A reload as if the file had changed (SIGHUP). */
  trigger (): void {
    this.schedule('trigger')
  }

  /** Stop watching; no `onChange` starts after this. */
  close (): void {
    this.closed = true
    if (this.timer !== undefined) clearTimeout(this.timer)
    if (this.pollTimer !== undefined) clearInterval(this.pollTimer)
    for (const w of this.dirWatchers.values()) w.close()
    this.dirWatchers.clear()
    for (const target of this.targets) {
      target.fileWatcher?.close()
      target.fileWatcher = undefined
    }
  }

  /** Debounce: (re)start the quiet period before a reload. */
  private schedule (why: string): void {
    if (this.closed) return
    this.log.debug({ file: this.file, why }, 'config file may have changed')
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.timer = setTimeout(() => this.fire(), this.debounceMs)
    this.timer.unref()
  }

  /** Serialise: run the reload now, or once more after the one running. */
  private fire (): void {
    const { file, log } = this
    this.timer = undefined
    if (this.closed) return
    if (this.running) {
      log.debug({ file }, 'config reload running; will run again after it')
      this.again = true
      return
    }
    this.running = true
    this.run().catch((err: unknown) => {
      log.error({ err, file }, 'config watcher failed')
    }).finally(() => {
      this.running = false
      if (this.again && !this.closed) {
        this.again = false
        this.schedule('changed during reload')
      }
    })
  }

  /** Re-arm the file watches on the current inodes, call `onChange` unless the config is missing, then follow the related list. */
  private async run (): Promise<void> {
    const { config, file, log } = this
    for (const target of this.targets) {
      target.signature = await signature(target.file)
      // The old inode (or ConfigMap dir) may be gone: watch whatever is there now.
      this.armFile(target)
      await learnLinkName(target)
    }
    if (config.signature === undefined) {
      log.warn({ file }, 'config file is missing; keeping the current config until it reappears')
      return
    }
    if (this.closed) return
    try {
      await this.opts.onChange()
    } catch (err) {
      log.error({ err, file }, 'config reload handler failed')
    }
    await this.syncRelated()
    log.debug({ file, files: this.targets.length }, 'watching the config files again')
  }

  /** Follow the related list: watch newly named files, stop watching dropped ones. */
  private async syncRelated (): Promise<void> {
    if (this.opts.related === undefined || this.closed) return
    let wanted: Set<string>
    try {
      wanted = new Set(this.opts.related().map((f) => resolve(f)))
    } catch (err) {
      this.log.warn({ err, file: this.file }, 'cannot list the files the config references')
      return
    }
    wanted.delete(this.file)
    const kept: Target[] = [this.config]
    for (const target of this.targets.slice(1)) {
      if (wanted.delete(target.file)) kept.push(target)
      else target.fileWatcher?.close()
    }
    for (const path of wanted) {
      const target = newTarget(path)
      target.signature = await signature(target.file)
      await learnLinkName(target)
      kept.push(target)
      this.armDir(target.dir)
      this.armFile(target)
    }
    this.targets = kept
    this.unwatchUnusedDirs()
  }

  /** A directory none of the files lives in any more is not watched. */
  private unwatchUnusedDirs (): void {
    for (const [dir, w] of this.dirWatchers) {
      if (!this.targets.some((x) => x.dir === dir)) {
        w.close()
        this.dirWatchers.delete(dir)
      }
    }
  }

  /** Watch a directory for events naming one of its targets (rename, `..data` swap). */
  private armDir (dir: string): void {
    const { dirWatchers, log } = this
    if (!this.useFsWatch || this.closed || dirWatchers.has(dir)) return
    try {
      // persistent: false — the watch alone must not keep the process alive.
      const w = watch(dir, { persistent: false }, (event, name) => {
        // No name (some platforms): assume it may be ours.
        const n = name?.toString()
        if (n === undefined || this.targets.some((x) => x.dir === dir && x.names.has(n))) this.schedule(`${event} ${n ?? '(unnamed)'}`)
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

  /** Watch the inode a target is read from now (replacing the watch on an older one). */
  private armFile (target: Target): void {
    if (!this.useFsWatch || this.closed) return
    target.fileWatcher?.close()
    target.fileWatcher = undefined
    try {
      // Follows symlinks: watches the inode the file is read from, wherever it lives.
      const w = watch(target.file, { persistent: false }, (event) => this.schedule(`${event} (${basename(target.file)})`))
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

  /** The safety net: re-arm lost directory watches and schedule a reload for any file whose identity changed. */
  private async poll (): Promise<void> {
    if (this.polling || this.closed) return
    this.polling = true
    try {
      for (const target of this.targets) this.armDir(target.dir)
      for (const target of this.targets) {
        const sig = await signature(target.file)
        if (sig !== target.signature && !this.closed) {
          if (target.fileWatcher === undefined && sig !== undefined) this.armFile(target)
          target.signature = sig
          this.schedule(`poll: identity of ${basename(target.file)} changed`)
        }
      }
      this.log.trace({ file: this.file }, 'config files polled')
    } finally {
      this.polling = false
    }
  }
}
