/** The Redis store's FamilyPort: every family operation is one Lua script on the family's slot. */
import type { FamilyPort, RefreshRecord, RotateResult } from '../types.js'
import type { RedisContext } from './context.js'

/** The Lua script's answer {status, openid, unionid, appid, expiresAt, fexp, created} as a record. */
function toRecord (fid: string, r: string[]): RefreshRecord {
  const rec: RefreshRecord = {
    fid, openid: r[1], appid: r[3], expiresAt: Number(r[4]), familyExpiresAt: Number(r[5]), createdAt: Number(r[6])
  }
  if (r[2] !== '' && r[2] !== undefined && r[2] !== null) rec.unionid = r[2]
  return rec
}

export function createRedisFamilies ({ cmd, keys, op }: RedisContext): FamilyPort {
  return {
    async createFamily (hash, record) {
      const k = keys.family(record.fid)
      await op('createFamily', () => cmd.wgCreate(k.meta, k.spent, hash, String(record.expiresAt), String(record.familyExpiresAt),
        record.openid, record.unionid ?? '', record.appid, String(record.createdAt)))
    },

    async rotateRefresh (input): Promise<RotateResult> {
      const k = keys.family(input.fid)
      const r = await op('rotateRefresh', () => cmd.wgRotate(k.meta, k.spent, k.grace(input.hash), input.hash, input.nextHash, input.grace,
        String(input.nowMs), String(input.refreshTtlMs), String(input.graceMs), `\t${input.appids.join('\t')}\t`))
      switch (r[0]) {
        case 'rotated': return { status: 'rotated', record: toRecord(input.fid, r) }
        case 'grace': return { status: 'grace', record: toRecord(input.fid, r), grace: r[7] }
        case 'reused': return { status: 'reused', fid: input.fid }
        case 'foreign': return { status: 'foreign', appid: r[1] }
        case 'expired': return { status: 'expired' }
        case 'revoked': return { status: 'revoked' }
        default: return { status: 'invalid' }
      }
    },

    async familyToken (fid, hash, nowMs) {
      const k = keys.family(fid)
      return await op('familyToken', () => cmd.wgHolds(k.meta, k.spent, hash, String(nowMs)))
    }
  }
}
