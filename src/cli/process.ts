/**
 * The process's signals and last-resort error handlers, in one place for the
 * single process, a cluster worker and the workers' primary:
 * - SIGTERM / SIGINT: stop (drain) once, then let the process end with exit code 0;
 * - SIGHUP: reload;
 * - an uncaught exception or unhandled rejection: log it as fatal, stop (drain)
 *   and exit 1 — the process state is unknown, it must not keep serving.
 */
import type { Logger } from 'pino'

export interface ProcessOwner {
  logger: Logger
  /** Drain and release everything; the process then ends on its own (nothing left open). */
  stop: (reason: string) => Promise<void>
  /** SIGHUP. */
  reload: () => void
  /** The most a crash may spend draining before the process exits anyway (ms). */
  crashDrainMs: number
}

/** Install the handlers; returns `stop` for other reasons to stop (e.g. a worker's primary gone). */
export function ownProcess (owner: ProcessOwner): { stop: (reason: string) => void } {
  const { logger } = owner
  let stopping: Promise<void> | undefined
  const stop = (reason: string): Promise<void> => {
    stopping ??= owner.stop(reason).then(
      () => { logger.flush() },
      (err: unknown) => { logger.error({ err }, 'shutdown failed'); process.exitCode = 1 }
    )
    return stopping
  }
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'signal received')
    stop(signal).then(() => { process.exitCode ??= 0 })
  }
  const onCrash = (kind: string) => (err: unknown) => {
    process.exitCode = 1
    logger.fatal({ err }, `${kind}: draining and exiting`)
    // Bounded: a drain that cannot finish must not keep a broken process alive.
    setTimeout(() => process.exit(1), owner.crashDrainMs).unref()
    stop(kind).then(() => process.exit(1))
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  process.on('SIGHUP', () => owner.reload())
  process.on('uncaughtException', onCrash('uncaught exception'))
  process.on('unhandledRejection', onCrash('unhandled rejection'))
  return { stop: (reason) => { stop(reason).catch(() => {}) } }
}
