/**
 * Writes the batch manifest: the pinned model, the counts and cost, every shard's output with
 * its sha256 and lineage, and the root hash over the shard outputs. It reads the shard results back from storage, so the workflow never
 * carries a per-shard list, then removes the checkpoint parts that the shard outputs replaced.
 */
import { Context, log } from '@temporalio/activity';
import type { ObjectStore } from './storage/object-store';
import { joinUri } from './storage/uri';
import { shardPartsUri, shardResultUri } from './run-shard';
import type { Listing, ModelVersion, ShardResult } from './types';
import { failedShardUri, type FailedShardRecord } from './record-failed-shard';
import { utilisation, type BatchTotals, type StageTotals, type Utilisation } from '../workflows/batch-state';
import { ROOT_HASH_SCHEME, shardsRootHash } from './audit/root-hash';
import type { ResolvedModel } from './resolve-model';

/** Shard results read from storage at once. */
const READ_CONCURRENCY = 16;

export interface ManifestRequest {
  batchId: string;
  workflowId: string;
  input: string;
  outputUri: string;
  model: ResolvedModel;
  listing: Listing;
  totals: BatchTotals;
  startedAt: string;
  runs: number;
}

export interface ManifestShard {
  index: number;
  output: string;
  sha256: string;
  images: number;
  failed: number;
  attempt: number;
  resumedFrom: number;
  capacity: ShardResult['capacity'];
  costUsd: number;
  wallSeconds: number;
  timings: ShardResult['timings'];
  attempts: ShardResult['attempts'];
  lineage: ShardResult['lineage'];
}

export interface BatchManifest {
  manifestVersion: 1;
  batchId: string;
  workflowId: string;
  input: string;
  output: string;
  listing: Listing;
  model: {
    name: string;
    version: string;
    sha256: string;
    artifactUri: string;
    task: string;
    preprocess: ModelVersion['preprocess'];
    threshold: number;
    labels: string[];
    /** The alias the batch named, e.g. `production`, resolved once when the batch started. */
    resolvedAlias?: string;
  };
  images: number;
  imagesOk: number;
  imagesFailed: number;
  costUsd: number;
  /** Time the completed shards spent per stage, and the stage that limited throughput. */
  utilisation: Utilisation | null;
  shards: ManifestShard[];
  /** sha256 over the shards' `index:sha256` lines; see activities/audit/root-hash.ts. Absent in manifests written before root hashes. */
  rootHash?: string;
  rootHashScheme?: typeof ROOT_HASH_SCHEME;
  /** URI of the exported workflow history (`<output>/history.json`), when the orchestrator exports it. */
  history?: string;
  /** Shards that used up their error budget, with every attempt. */
  failedShards: Array<Omit<FailedShardRecord, 'outputUri'>>;
  startedAt: string;
  finishedAt: string;
  runs: number;
}

/** Stage times summed over the completed shards' final attempts. */
function sumStages(shards: ManifestShard[]): StageTotals | undefined {
  if (shards.length === 0) return undefined;
  const total: StageTotals = { downloadMs: 0, decodeMs: 0, inferenceMs: 0, postprocessMs: 0, uploadMs: 0, wallMs: 0 };
  for (const shard of shards) {
    for (const key of Object.keys(total) as Array<keyof StageTotals>) total[key] += shard.timings[key] ?? 0;
  }
  return total;
}

export function manifestUri(outputUri: string): string {
  return joinUri(outputUri, 'manifest.json');
}

export function historyUri(outputUri: string): string {
  return joinUri(outputUri, 'history.json');
}

/** Set `exportsHistory` when the exportHistory activity runs after this one, so the manifest names historyUri. */
export function createWriteManifest(deps: { store: ObjectStore; exportsHistory?: boolean }) {
  return async function writeManifest(request: ManifestRequest): Promise<{ manifestUri: string }> {
    const context = Context.current();
    const failedIndexes = new Set(request.totals.failedShards.map((shard) => shard.index));
    const shards: ManifestShard[] = [];

    for (let first = 0; first < request.listing.shards; first += READ_CONCURRENCY) {
      const indexes = Array.from({ length: Math.min(READ_CONCURRENCY, request.listing.shards - first) }, (_, i) => first + i);
      const results = await Promise.all(indexes.map((index) => readShardResult(deps.store, request.outputUri, index, failedIndexes)));
      for (const result of results) if (result) shards.push(toManifestShard(result));
      context.heartbeat({ shardsRead: first + indexes.length });
    }

    const imagesFailedInShards = shards.reduce((sum, shard) => sum + shard.failed, 0);
    const imagesInShards = shards.reduce((sum, shard) => sum + shard.images, 0);
    const imagesFailed = imagesFailedInShards + (request.listing.images - imagesInShards);
    const manifest: BatchManifest = {
      manifestVersion: 1,
      batchId: request.batchId,
      workflowId: request.workflowId,
      input: request.input,
      output: request.outputUri,
      listing: request.listing,
      model: {
        name: request.model.name,
        version: request.model.version,
        sha256: request.model.sha256,
        artifactUri: request.model.artifactUri,
        task: request.model.task,
        preprocess: request.model.preprocess,
        threshold: request.model.threshold,
        labels: request.model.labels,
        ...(request.model.resolvedAlias === undefined ? {} : { resolvedAlias: request.model.resolvedAlias }),
      },
      images: request.listing.images,
      imagesOk: request.listing.images - imagesFailed,
      imagesFailed,
      costUsd: shards.reduce((sum, shard) => sum + shard.costUsd, 0),
      utilisation: utilisation(sumStages(shards)),
      shards,
      rootHash: shardsRootHash(shards),
      rootHashScheme: ROOT_HASH_SCHEME,
      ...(deps.exportsHistory ? { history: historyUri(request.outputUri) } : {}),
      failedShards: await readFailedShards(deps.store, request),
      startedAt: request.startedAt,
      finishedAt: new Date().toISOString(),
      runs: request.runs,
    };
    const uri = manifestUri(request.outputUri);
    await deps.store.put(uri, JSON.stringify(manifest, null, 2) + '\n', { contentType: 'application/json' });
    log.info('Manifest written', { batchId: request.batchId, manifest: uri, shards: shards.length });

    await removeParts(deps.store, request, shards);
    return { manifestUri: uri };
  };
}

async function readShardResult(store: ObjectStore, outputUri: string, index: number, failed: Set<number>): Promise<ShardResult | null> {
  try {
    return JSON.parse((await store.get(shardResultUri(outputUri, index))).body.toString('utf8')) as ShardResult;
  } catch (err) {
    // A shard that failed after its retries has no result; any other gap is a real error.
    if (failed.has(index) && err instanceof Error && err.name === 'NotFound') return null;
    throw err;
  }
}

function toManifestShard(result: ShardResult): ManifestShard {
  return {
    index: result.shardIndex,
    output: result.output,
    sha256: result.outputSha256,
    images: result.images,
    failed: result.failed,
    attempt: result.attempt,
    resumedFrom: result.resumedFrom,
    capacity: result.capacity,
    costUsd: result.costUsd,
    wallSeconds: result.wallSeconds,
    timings: result.timings,
    attempts: result.attempts,
    lineage: result.lineage,
  };
}

/** Reads the failure records of the shards the workflow reported failed. */
async function readFailedShards(store: ObjectStore, request: ManifestRequest): Promise<Array<Omit<FailedShardRecord, 'outputUri'>>> {
  const records = [];
  for (const failed of request.totals.failedShards) {
    const body = (await store.get(failedShardUri(request.outputUri, failed.index))).body.toString('utf8');
    records.push(JSON.parse(body) as Omit<FailedShardRecord, 'outputUri'>);
  }
  return records;
}

/** Deletes checkpoint parts of completed shards; no attempt can need them once the manifest is written. */
async function removeParts(store: ObjectStore, request: ManifestRequest, shards: ManifestShard[]): Promise<void> {
  for (const shard of shards) {
    const prefix = shardPartsUri(request.outputUri, shard.index);
    try {
      for await (const entry of store.list(prefix)) await store.delete(entry.uri);
    } catch (err) {
      log.warn('Could not remove checkpoint parts', { batchId: request.batchId, shard: shard.index, prefix, error: String(err) });
    }
  }
}
