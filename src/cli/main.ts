#!/usr/bin/env node
/**
 * The `wegate` command: serve | check | emulator. Each command parses only its
 * own options (node:util parseArgs, strict): `--help` prints its usage and does
 * nothing else; an unknown option, another command's option or a stray argument
 * prints the usage and exits 2. Exit codes: 0 done, 1 the config has problems,
 * 2 the command line is wrong.
 */
import { readFileSync } from 'node:fs'
import { parseArgs, type ParseArgsConfig } from 'node:util'

// where serve and check look for the config without -c
const CONFIG_DEFAULT = 'default: $WEGATE_CONFIG, then ./gateway.yaml'

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>

interface Command {
  usage: string
  options: NonNullable<ParseArgsConfig['options']>
  /** How many positional arguments the command takes (the config file for serve and check). */
  positionals: number
  run: (values: Values, positionals: string[]) => Promise<number | undefined>
}

const configOptions = {
  config: { type: 'string', short: 'c' },
  demo: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h' }
} as const

const configFile = (values: Values, positionals: string[]): string =>
  (values.config as string | undefined) ?? positionals[0] ?? process.env.WEGATE_CONFIG ?? 'gateway.yaml'

const COMMANDS: Record<string, Command> = {
  serve: {
    usage: `usage: wegate serve [-c gateway.yaml] [--demo]
  Run the gateway; SIGTERM/SIGINT drain and exit 0, SIGHUP reloads the config.
  -c, --config <file>  the config (${CONFIG_DEFAULT})
  --demo               also run the WeChat emulator and the demo upstreams (at the ports the
                       config points to), and allow the repository's demo JWT secret
  -h, --help           print this and exit
Exit status: 1 when the config has problems (each listed with its path and line).
`,
    options: configOptions,
    positionals: 1,
    run: async (values, positionals) => {
      const { serve } = await import('./serve.js')
      await serve({ file: configFile(values, positionals), demo: values.demo === true })
      return undefined
    }
  },
  check: {
    usage: `usage: wegate check [-c gateway.yaml] [--demo]
  Validate a config as serve (with the same --demo) would, like nginx -t: every schema,
  \${VAR} and rule problem at once, each with its path and line.
  -c, --config <file>  the config (${CONFIG_DEFAULT})
  --demo               allow the repository's demo JWT secret
  -h, --help           print this and exit
Exit status: 0 valid, 1 problems (listed on stderr).
`,
    options: configOptions,
    positionals: 1,
    run: async (values, positionals) => {
      const { check } = await import('./check.js')
      return await check(configFile(values, positionals), { demo: values.demo === true })
    }
  },
  rollout: {
    usage: `usage: wegate rollout status|pause|resume|promote|abort [route] [-c gateway.yaml] [--admin URL]
  The automatic canary ramps of a running gateway, through its admin API.
  status                a table: route, step, share, requests (canary/stable), canary error rate,
                        p99 canary/stable, time in step, state; then why it is in that state
  pause <route>         hold the current step (past its interval) until resume
  resume <route>        continue judging the step
  promote <route>       the canary takes its final share now
  abort <route>         roll the canary back to 0 now
  -c, --config <file>   where admin.host/port and admin.apiToken come from (${CONFIG_DEFAULT})
  --admin <url>         the admin address instead (e.g. http://10.0.0.5:9090)
  -h, --help            print this and exit
The token: $WEGATE_ADMIN_TOKEN, else admin.apiToken from the config.
Exit status: 0 done, 1 refused or unreachable, 2 a wrong command line.
`,
    options: { config: { type: 'string', short: 'c' }, admin: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    positionals: 2,
    run: async (values, positionals) => {
      const { rolloutCli } = await import('./rollout.js')
      return await rolloutCli({
        action: positionals[0] ?? 'status',
        route: positionals[1],
        file: (values.config as string | undefined) ?? process.env.WEGATE_CONFIG ?? 'gateway.yaml',
        admin: values.admin as string | undefined,
        out: (text) => process.stdout.write(text),
        err: (text) => process.stderr.write(text)
      })
    }
  },
  emulator: {
    usage: `usage: wegate emulator [--port 9400] [--host 127.0.0.1] [--app appId:secret ...]
  Run the WeChat code2Session stand-in (docs/emulator.md) until SIGTERM/SIGINT.
  --port <n>              port to listen on (default 9400; 0 picks a free one)
  --host <address>        interface to bind (default 127.0.0.1)
  --app <appId:secret>    a mini program it knows; repeatable (default: the demo app)
  -h, --help              print this and exit
`,
    options: {
      port: { type: 'string' },
      host: { type: 'string' },
      app: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h' }
    },
    positionals: 0,
    run: async (values) => {
      const { runEmulator } = await import('./emulator.js')
      await runEmulator({
        port: Number(values.port ?? 9400),
        host: (values.host as string | undefined) ?? '127.0.0.1',
        apps: (values.app as string[] | undefined) ?? []
      })
      return undefined
    }
  }
}

const USAGE = `usage: wegate <command> [options]
  serve     [-c gateway.yaml] [--demo]   run the gateway
  check     [-c gateway.yaml] [--demo]   validate a config as serve would (exit 0 ok, 1 problems)
  emulator  [--port 9400] [--host 127.0.0.1] [--app appId:secret ...]
                                         run the WeChat API stand-in
  rollout   status|pause|resume|promote|abort [route]
                                         the automatic canary ramps of a running gateway
  wegate <command> --help                that command's options
  wegate --version                       the version
The config file: -c <file> or the one argument (${CONFIG_DEFAULT}).
Exit status: 0 done, 1 the config has problems, 2 a wrong command line.
`

/** The version in package.json (two levels up from src/cli and from dist/cli). */
function version (): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

async function main (argv: string[]): Promise<number | undefined> {
  const [name, ...rest] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    process.stdout.write(USAGE)
    return 0
  }
  if (name === '--version') {
    process.stdout.write(`wegate ${version()}\n`)
    return 0
  }
  const command = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined
  if (command === undefined) {
    process.stderr.write(`wegate: unknown command '${name}'\n${USAGE}`)
    return 2
  }
  let parsed
  try {
    parsed = parseArgs({ args: rest, options: command.options, strict: true, allowPositionals: true })
    if (parsed.positionals.length > command.positionals) {
      throw new Error(`unexpected argument '${parsed.positionals[command.positionals]}'`)
    }
  } catch (err) {
    // parseArgs' own wording, without its hint about `--` (a config file never starts with -)
    const message = (err instanceof Error ? err.message : String(err)).replace(/\. To specify a positional argument.*$/s, '')
    process.stderr.write(`wegate ${name}: ${message.charAt(0).toLowerCase()}${message.slice(1)}\n${command.usage}`)
    return 2
  }
  if (parsed.values.help === true) {
    process.stdout.write(command.usage)
    return 0
  }
  return await command.run(parsed.values, parsed.positionals)
}

main(process.argv.slice(2)).then((code) => {
  if (code !== undefined) process.exitCode = code
}, (err: unknown) => {
  process.stderr.write(`wegate: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 2
})
