// Preloaded into a real `wegate serve` by test/shutdown.test.ts (helpers/process.ts `preload`):
// on SIGUSR2 the process gets what a bug would give it, an uncaught exception
// (CRASH_KIND=exception) or an unhandled rejection (CRASH_KIND=rejection).
process.on('SIGUSR2', () => {
  if (process.env.CRASH_KIND === 'rejection') {
    Promise.reject(new Error('test: unhandled rejection'))
  } else {
    setImmediate(() => { throw new Error('test: uncaught exception') })
  }
})
