/**
 * The root hash of a batch manifest, which commits to every shard output at once, so one value
 * can be published or signed and later checked with `skynewt verify`.
 *
 * Definition (scheme `shard-lines-sha256`): the lowercase hex sha256 of the UTF-8 text that has
 * one line `<shard index>:<sha256 of the shard's JSONL output>\n` per completed shard, in
 * ascending shard index, with the index in decimal without padding. Shards that failed after
 * their retries have no output and no line.
 */
import { sha256Hex } from '../storage/hash';

export const ROOT_HASH_SCHEME = 'shard-lines-sha256';

export function shardsRootHash(shards: ReadonlyArray<{ index: number; sha256: string }>): string {
  const ordered = [...shards].sort((a, b) => a.index - b.index);
  return sha256Hex(ordered.map((shard) => `${shard.index}:${shard.sha256}\n`).join(''));
}
