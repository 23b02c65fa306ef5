/** `npm run openapi`: regenerate docs/openapi.json from the route schemas (src/cli/openapi.ts). */
import { OPENAPI_FILE, writeOpenApi } from './openapi.js'

await writeOpenApi()
process.stdout.write(`wrote ${OPENAPI_FILE}\n`)
