/**
 * Stores the attempts of a shard that used up its error budget next to the shard outputs, so the
 * manifest can list them without the workflow carrying them.
 */
import type { ObjectStore } from './storage/object-store';
import { joinUri } from './storage/uri';
import type { ShardAttempt } from './types';

export interface FailedShardRecord {
  outputUri: string;
  shardIndex: number;
  error: string;
  attempts: ShardAttempt[];
}

export function failedShardUri(outputUri: string, index: number): string {
  return joinUri(outputUri, 'shards', `shard-${String(index).padStart(5, '0')}.failed.json`);
}

export function createRecordFailedShard(deps: { store: ObjectStore }) {
  return async function recordFailedShard(record: FailedShardRecord): Promise<void> {
    const { outputUri, ...content } = record;
    await deps.store.put(failedShardUri(outputUri, record.shardIndex), JSON.stringify(content, null, 2), { contentType: 'application/json' });
  };
}
