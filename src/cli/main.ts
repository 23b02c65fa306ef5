#!/usr/bin/env node
/** The `wegate` command: serve | check | emulator. */
import { parseArgs } from 'node:util'
import { check } from './check.js'
import { serve } from './serve.js'

const USAGE = `usage:
  wegate serve    [-c gateway.yaml] [--demo]   run the gateway (--demo: with the WeChat emulator
                                               and demo upstreams; allows the demo JWT secret)
  wegate check    [-c gateway.yaml] [--demo]   validate a config as serve would (exit 0 ok, 1 problems)
  wegate emulator [--port 9400] [--host 127.0.0.1] [--app appId:secret ...]
                                               run the WeChat API stand-in
The config path defaults to $WEGATE_CONFIG, then ./gateway.yaml.
`

async function main (argv: string[]): Promise<number | undefined> {
  const [command, ...rest] = argv
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      config: { type: 'string', short: 'c' },
      demo: { type: 'boolean', default: false },
      port: { type: 'string' },
      host: { type: 'string' },
      app: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' }
    },
    strict: true,
    allowPositionals: true
  })
  const file = values.config ?? positionals[0] ?? process.env.WEGATE_CONFIG ?? 'gateway.yaml'
  switch (command) {
    case 'serve':
      await serve({ file, demo: values.demo ?? false })
      return undefined
    case 'check':
      return await check(file, { demo: values.demo ?? false })
    case 'emulator': {
      const { runEmulator } = await import('./emulator.js')
      await runEmulator({ port: Number(values.port ?? 9400), host: values.host ?? '127.0.0.1', apps: values.app ?? [] })
      return undefined
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE)
      return 0
    default:
      process.stderr.write(`wegate: unknown command '${command}'\n${USAGE}`)
      return 2
  }
}

main(process.argv.slice(2)).then((code) => {
  if (code !== undefined) process.exitCode = code
}, (err: unknown) => {
  process.stderr.write(`wegate: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 2
})
