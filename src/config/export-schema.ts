/**
 * `npm run schema`: writes config/gateway.schema.json (editor autocompletion)
 * and docs/configuration.md (the field reference), both from the one schema.
 * test/config.test.ts fails when either is stale.
 */
import { writeFileSync } from 'node:fs'
import { configReference, editorSchema } from './schema.js'

writeFileSync(new URL('../../config/gateway.schema.json', import.meta.url), JSON.stringify(editorSchema(), null, 2) + '\n')
writeFileSync(new URL('../../docs/configuration.md', import.meta.url), configReference())
