/** `wegate emulator`: the WeChat API stand-in on its own (wired up with src/emulator). */
export async function runEmulator (_opts: { port: number, host: string, apps: string[] }): Promise<void> {
  throw new Error('emulator not wired yet')
}
