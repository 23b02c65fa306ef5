import neostandard from 'neostandard'

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'client/*/dist/**', 'coverage/**', '.tap/**', 'node_modules/**'] }),
  {
    rules: {
      // gateway.yaml's ${VAR} syntax appears in plain strings on purpose.
      'no-template-curly-in-string': 'off'
    }
  }
]
