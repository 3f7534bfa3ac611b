/**
 * Finds which input, model and capacity produced a shard output or a mask, without Temporal. The
 * batch folder comes from the URI, the model and capacity from its manifest, and for a mask the
 * input from the output record that names the mask.
 */
import type { ObjectStore } from '../storage/object-store';
import { formatUri, joinUri, parseUri } from '../storage/uri';
import { shardResultUri } from '../run-shard';
import type { OutputRecord, ShardAttempt } from '../types';
import type { BatchManifest, ManifestShard } from '../write-manifest';

export interface OutputLineage {
  /** The URI that was looked up, in canonical form. */
  uri: string;
  kind: 'shard-output' | 'shard-result' | 'mask';
  batchId: string;
  workflowId: string;
  manifest: string;
  model: BatchManifest['model'];
  shard: Pick<ManifestShard, 'index' | 'output' | 'sha256' | 'images' | 'failed' | 'capacity' | 'attempts' | 'lineage'>;
  /** The output record that names the mask, with its 1-based line in the shard output. */
  record?: OutputRecord & { line: number };
  /**
   * The attempt whose checkpointed range covers the record, i.e. the capacity that produced it.
   * Null when no attempt's range covers it, e.g. for a manifest written without cursors.
   */
  attempt?: ShardAttempt | null;
}

/** Returns the batch folder above a `shards/` or `masks/` object, e.g. `s3://b/results/batch-1`. */
export function batchFolderOf(uri: string): string {
  const canonical = canonicalUri(uri);
  const match = /^(.*)\/(shards|masks)\/[^/]+$/.exec(canonical);
  if (match === null) {
    throw new Error(
      `Cannot find the batch of ${uri}: expected an object under a batch's shards/ or masks/ folder, e.g. <output>/<batchId>/masks/000000042.png.`,
    );
  }
  return match[1];
}

export async function findOutputLineage(uri: string, store: ObjectStore): Promise<OutputLineage> {
  const target = canonicalUri(uri);
  const folder = batchFolderOf(target);
  const manifestUri = joinUri(folder, 'manifest.json');
  let manifest: BatchManifest;
  try {
    manifest = JSON.parse((await store.get(manifestUri)).body.toString('utf8')) as BatchManifest;
  } catch (err) {
    if (err instanceof Error && err.name === 'NotFound') {
      throw new Error(`Cannot find the batch of ${uri}: ${manifestUri} does not exist, so the batch has not finished or the URI is not a batch output.`, { cause: err });
    }
    throw err;
  }
  const base = { uri: target, batchId: manifest.batchId, workflowId: manifest.workflowId, manifest: manifestUri, model: manifest.model };

  for (const shard of manifest.shards) {
    if (canonicalUri(shard.output) === target) return { ...base, kind: 'shard-output', shard: shardSummary(shard) };
    if (canonicalUri(shardResultUri(manifest.output, shard.index)) === target) return { ...base, kind: 'shard-result', shard: shardSummary(shard) };
  }

  // NOTE: a mask lookup reads shard outputs in order until one names the mask, so it reads the
  // whole batch's records in the worst case.
  for (const shard of manifest.shards) {
    const lines = (await store.get(shard.output)).body.toString('utf8').split('\n').filter((line) => line !== '');
    const records = lines.map((line) => JSON.parse(line) as OutputRecord);
    const position = records.findIndex((record) => typeof record.mask === 'string' && canonicalUri(record.mask) === target);
    if (position < 0) continue;
    const record = records[position];
    // Attempt cursors are offsets within the shard; the shard's first record has offset 0.
    const offset = record.index - records[0].index;
    return {
      ...base,
      kind: 'mask',
      shard: shardSummary(shard),
      record: { ...record, line: position + 1 },
      attempt: producingAttempt(shard.attempts, offset),
    };
  }
  throw new Error(`No output of batch ${manifest.batchId} (${manifestUri}) is ${uri}: it is neither a shard output nor a mask named by an output record.`);
}

/** Returns the last attempt whose checkpointed range [startCursor, endCursor) contains the offset. */
export function producingAttempt(attempts: ShardAttempt[], offset: number): ShardAttempt | null {
  let found: ShardAttempt | null = null;
  for (const attempt of attempts) {
    if (attempt.startCursor <= offset && offset < attempt.endCursor) found = attempt;
  }
  return found;
}

function shardSummary(shard: ManifestShard): OutputLineage['shard'] {
  const { index, output, sha256, images, failed, capacity, attempts, lineage } = shard;
  return { index, output, sha256, images, failed, capacity, attempts, lineage };
}

function canonicalUri(uri: string): string {
  return formatUri(parseUri(uri));
}
