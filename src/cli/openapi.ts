/**
 * The OpenAPI document as docs/openapi.json publishes it: the gateway built
 * (not listening) from the repository's gateway.yaml with its defaults (no
 * environment: the same text on every machine), and an admin.apiToken, so that
 * the endpoints behind it are described too. `npm run openapi` writes it;
 * test/openapi.test.ts fails when the file and the code disagree.
 */
import { fileURLToPath } from 'node:url'
import { buildGateway } from '../app.js'
import { loadConfigFile } from '../config/load.js'
import { createLogger } from '../log.js'

/** Where the document is published, from the repository's root. */
export const OPENAPI_FILE = 'docs/openapi.json'

const root = new URL('../../', import.meta.url)

/** The document's text for the repository's default config. */
export async function generateOpenApi (): Promise<string> {
  const loaded = await loadConfigFile(fileURLToPath(new URL('gateway.yaml', root)), {})
  // A placeholder, never served: with any admin.apiToken the /wechat/access-token and /rollouts endpoints exist.
  loaded.config.admin.apiToken = 'openapi-generation-placeholder-token-0000'
  // Only a failure is worth a line (on stderr: stdout may be the document).
  const logger = createLogger({ level: 'error', destination: process.stderr })
  const gw = await buildGateway(loaded, { demo: true, logger, rolloutTickMs: 0 })
  try {
    // The admin port's own route: what GET /openapi.json answers on a gateway with this config.
    const res = await gw.admin.inject({ method: 'GET', url: '/openapi.json' })
    if (res.statusCode !== 200) throw new Error(`GET /openapi.json answered ${res.statusCode}: ${res.body}`)
    return res.body
  } finally {
    await gw.public.close()
  }
}

/** `npm run openapi`: write docs/openapi.json. */
export async function writeOpenApi (): Promise<void> {
  const { writeFile } = await import('node:fs/promises')
  await writeFile(new URL(OPENAPI_FILE, root), await generateOpenApi())
}
