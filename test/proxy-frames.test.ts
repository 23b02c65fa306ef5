/**
 * The tunnel relay follows WebSocket frame boundaries without reading payloads,
 * so a gateway close frame never lands inside a frame: checked against frames
 * the `ws` library itself builds (masked and not, 7-bit / 16-bit / 64-bit
 * lengths), fed whole, byte by byte and in odd slices. The close frames it
 * writes are read back by `ws`'s own parser.
 */
import t from 'tap'
import type { Writable } from 'node:stream'
import * as ws from 'ws'
import { FrameCursor, closeFrame } from '../src/proxy/tunnels.js'

// ws's own frame writer and parser (exported at run time, not in its type declarations).
const { Sender, Receiver } = ws as unknown as {
  Sender: { frame: (data: Buffer, options: Record<string, unknown>) => Buffer[] }
  Receiver: new (options: { isServer: boolean }) => Writable
}

/** The bytes `ws` writes for a message of `size` bytes. */
function frameOf (size: number, mask: boolean): Buffer {
  const list = Sender.frame(Buffer.alloc(size, 0x61), { fin: true, opcode: 2, mask, readOnly: false, rsv1: false, maskKey: Buffer.from([1, 2, 3, 4]) })
  return Buffer.concat(list)
}

/** Feed `bytes` in slices of `step`; the cursor's boundary flag after each slice. */
function boundaries (bytes: Buffer, step: number): boolean[] {
  const cursor = new FrameCursor()
  const out: boolean[] = []
  for (let i = 0; i < bytes.length; i += step) {
    cursor.feed(bytes.subarray(i, i + step))
    out.push(cursor.atBoundary)
  }
  return out
}

t.test('a boundary only after whole frames, however the bytes are sliced', async (t) => {
  for (const mask of [false, true]) {
    for (const size of [0, 5, 125, 126, 300, 65_535, 65_536, 70_000]) {
      const frame = frameOf(size, mask)
      const stream = Buffer.concat([frame, frame, frame])
      for (const step of [1, 3, 7, 100, frame.length, stream.length]) {
        const seen = boundaries(stream, step)
        // After slice k the cursor has seen min((k+1)*step, total) bytes: a boundary exactly at multiples of the frame.
        const want = seen.map((_, k) => Math.min((k + 1) * step, stream.length) % frame.length === 0)
        t.same(seen, want, `${mask ? 'masked' : 'unmasked'} ${size} B frames in ${step}-byte slices`)
      }
    }
  }
})

t.test('close frames the gateway writes parse as close frames with the code and reason', async (t) => {
  for (const masked of [false, true]) {
    const receiver = new Receiver({ isServer: masked }) // a server expects masked frames
    const got = new Promise<[number, string]>((resolve) => receiver.on('conclude', (code: number, reason: Buffer) => resolve([code, reason.toString()])))
    const reason = JSON.stringify({ code: 20006, message: 'Access token has been revoked' })
    receiver.write(closeFrame(4401, reason, masked))
    t.same(await got, [4401, reason], masked ? 'to the upstream (masked)' : 'to the client')
  }
  t.equal(closeFrame(1001, 'x'.repeat(200), false).length, 2 + 125, 'the reason is cut to fit a control frame')
})
