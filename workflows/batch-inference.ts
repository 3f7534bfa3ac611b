/**
 * `batchInference`: one batch of images through one pinned model version. The workflow holds only
 * references and counts: the listing lives in storage, shard outputs are written by the shard
 * activities, and the manifest is assembled by an activity that reads them back.
 */
import {
  ContinueAsNew,
  continueAsNew,
  defineQuery,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setHandler,
  upsertMemo,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { OrchestratorActivities } from '../activities/orchestrator-activities';
import type { ShardResult } from '../activities/types';
import { validateBatchInput } from './batch-input';
import { BATCH_FATAL_TYPES, ShardFailed, runShardWithBudgets } from './shard-runner';
import {
  MAX_FAILED_SHARDS_LISTED,
  emptyTotals,
  utilisation,
  type BatchProgress,
  type BatchState,
  type BatchStatus,
  type BatchSummary,
} from './batch-state';
import { PROGRESS_QUERY } from './names';
import * as attributes from './search-attributes';

export const progressQuery = defineQuery<BatchProgress>(PROGRESS_QUERY);

const orchestrator = proxyActivities<OrchestratorActivities>({
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '1 minute',
  retry: {
    initialInterval: '1 second',
    maximumInterval: '30 seconds',
    maximumAttempts: 5,
    nonRetryableErrorTypes: BATCH_FATAL_TYPES,
  },
});

export async function batchInference(raw: unknown, resumed?: BatchState): Promise<BatchSummary> {
  const info = workflowInfo();
  let status: BatchStatus = resumed ? 'running' : 'starting';
  let state: BatchState | undefined = resumed;
  const running = new Set<number>();
  // The progress query still returns a result after the workflow closes, so the status must
  // record how the batch ended.
  const setStatus = (next: BatchStatus) => {
    status = next;
  };

  setHandler(progressQuery, (): BatchProgress => ({
    batchId: state?.input.batchId ?? info.workflowId,
    status,
    model: state ? `${state.model.name}@${state.model.version}` : null,
    shards: state?.listing.shards ?? 0,
    shardsDone: state?.totals.shardsDone ?? 0,
    shardsFailed: state?.totals.shardsFailed ?? 0,
    shardsRunning: running.size,
    images: state?.listing.images ?? 0,
    imagesDone: state?.totals.imagesDone ?? 0,
    imagesFailed: state?.totals.imagesFailed ?? 0,
    costUsd: state?.totals.costUsd ?? 0,
    output: state?.outputUri ?? null,
    run: state?.runs ?? 1,
    utilisation: utilisation(state?.totals.stages),
  }));

  try {
    if (state === undefined) {
      state = await startBatch(raw, info.workflowId, info.startTime.toISOString());
    } else {
      state.runs += 1;
    }
    setStatus('running');
    return await runShards(raw, state, running, setStatus);
  } catch (err) {
    if (!isContinueAsNew(err)) setStatus(isCancellation(err) ? 'cancelled' : 'failed');
    throw err;
  }
}

/** Runs the remaining shards, then continues as new or writes the manifest. */
async function runShards(
  raw: unknown,
  batch: BatchState,
  running: Set<number>,
  setStatus: (status: BatchStatus) => void,
): Promise<BatchSummary> {
  const info = workflowInfo();
  const budgets = {
    spotTaskQueue: batch.input.taskQueue,
    onDemandTaskQueue: batch.input.onDemandTaskQueue,
    maxErrorRetries: batch.input.maxErrorRetries,
    preemptionsBeforeOnDemand: batch.input.preemptionsBeforeOnDemand,
  };

  const launch = async (index: number): Promise<void> => {
    running.add(index);
    const first = index * batch.input.shardSize;
    const images = Math.min(batch.input.shardSize, batch.listing.images - first);
    try {
      const result = await runShardWithBudgets({
        batchId: batch.input.batchId,
        shardIndex: index,
        listingUri: shardListingUri(batch.listing.uri, index),
        firstIndex: first,
        images,
        model: batch.model,
        outputUri: batch.outputUri,
        checkpointEvery: batch.input.checkpointEvery,
        maxPixels: batch.input.maxPixels,
        topK: batch.input.topK,
        dryRun: batch.input.dryRun,
      }, budgets);
      recordShard(batch, result);
    } catch (err) {
      if (!(err instanceof ShardFailed)) throw err;
      recordFailedShard(batch, index, images, err);
      await orchestrator.recordFailedShard({ outputUri: batch.outputUri, shardIndex: index, error: err.message, attempts: err.attempts });
    } finally {
      running.delete(index);
    }
  };

  // Shards run with at most maxConcurrentShards in flight. When the server suggests a new run,
  // no new shard starts; the in-flight ones finish, then the workflow continues as new.
  const inFlight = new Map<number, Promise<void>>();
  for (;;) {
    while (
      !workflowInfo().continueAsNewSuggested &&
      inFlight.size < batch.input.maxConcurrentShards &&
      batch.nextShard < batch.listing.shards
    ) {
      const index = batch.nextShard++;
      inFlight.set(index, launch(index).finally(() => inFlight.delete(index)));
    }
    if (inFlight.size === 0) break;
    await Promise.race(inFlight.values());
  }

  upsertTotals(batch);
  if (batch.nextShard < batch.listing.shards) {
    log.info('Continuing batch as new', { batchId: batch.input.batchId, nextShard: batch.nextShard, historyLength: workflowInfo().historyLength });
    return await continueAsNew<typeof batchInference>(raw, batch);
  }

  setStatus('writing-manifest');
  const { manifestUri } = await orchestrator.writeManifest({
    batchId: batch.input.batchId,
    workflowId: info.workflowId,
    input: batch.input.input,
    outputUri: batch.outputUri,
    model: batch.model,
    listing: batch.listing,
    totals: batch.totals,
    startedAt: batch.startedAt,
    runs: batch.runs,
  });
  // Batches that reached this point before history export existed replay without the call.
  if (patched('export-history')) {
    await orchestrator.exportHistory({ workflowId: info.workflowId, runId: info.runId, outputUri: batch.outputUri });
  }
  const failed = batch.totals.shardsFailed > 0;
  setStatus(failed ? 'completed-with-errors' : 'completed');
  upsertMemo({ manifest: manifestUri });
  log.info('Batch finished', { batchId: batch.input.batchId, images: batch.listing.images, imagesFailed: batch.totals.imagesFailed, shardsFailed: batch.totals.shardsFailed });

  return {
    batchId: batch.input.batchId,
    workflowId: info.workflowId,
    status: failed ? 'completed-with-errors' : 'completed',
    images: batch.listing.images,
    imagesFailed: batch.totals.imagesFailed,
    shards: batch.listing.shards,
    shardsFailed: batch.totals.shardsFailed,
    failedShards: batch.totals.failedShards,
    model: { name: batch.model.name, version: batch.model.version, sha256: batch.model.sha256 },
    costUsd: batch.totals.costUsd,
    output: batch.outputUri,
    manifest: manifestUri,
    startedAt: batch.startedAt,
    finishedAt: new Date().toISOString(),
    runs: batch.runs,
  };
}

/** Validates the input, pins the model version and lists the inputs; runs once per batch. */
async function startBatch(raw: unknown, workflowId: string, startedAt: string): Promise<BatchState> {
  const input = validateBatchInput(raw, workflowId);
  upsertSearchAttributes([{ key: attributes.BATCH_ID, value: input.batchId }]);

  // The model is resolved once, here: a later registration or promotion never changes a running batch.
  const model = await orchestrator.resolveModel(input.model);
  upsertSearchAttributes([
    { key: attributes.MODEL, value: `${model.name}@${model.version}` },
    { key: attributes.MODEL_SHA256, value: model.sha256 },
  ]);

  const { outputUri, listing } = await orchestrator.listInputs({
    workflowId,
    input: input.input,
    output: input.output,
    batchId: input.batchId,
    shardSize: input.shardSize,
  });
  upsertSearchAttributes([{ key: attributes.IMAGES, value: listing.images }]);
  upsertMemo({
    model: `${model.name}@${model.version}`,
    ...(model.resolvedAlias === undefined ? {} : { modelAlias: model.resolvedAlias }),
    input: input.input,
    output: outputUri,
  });
  log.info('Batch planned', { batchId: input.batchId, images: listing.images, shards: listing.shards, model: `${model.name}@${model.version}`, modelReference: input.model });

  return { input, model, listing, outputUri, nextShard: 0, totals: emptyTotals(), startedAt, runs: 1 };
}

function isContinueAsNew(err: unknown): boolean {
  return err instanceof ContinueAsNew;
}

function shardListingUri(listingUri: string, index: number): string {
  return `${listingUri}/shard-${String(index).padStart(5, '0')}.txt`;
}

function recordShard(batch: BatchState, result: ShardResult): void {
  const stages = batch.totals.stages ?? { downloadMs: 0, decodeMs: 0, inferenceMs: 0, postprocessMs: 0, uploadMs: 0, wallMs: 0 };
  for (const key of Object.keys(stages) as Array<keyof typeof stages>) stages[key] += result.timings[key] ?? 0;
  batch.totals.stages = stages;
  batch.totals.shardsDone += 1;
  batch.totals.imagesDone += result.images;
  batch.totals.imagesFailed += result.failed;
  batch.totals.costUsd += result.costUsd;
}

function recordFailedShard(batch: BatchState, index: number, images: number, err: ShardFailed): void {
  const message = `Shard ${index} ${err.message}`;
  log.warn('Shard failed after its retries', { batchId: batch.input.batchId, shard: index, error: message });
  batch.totals.shardsFailed += 1;
  batch.totals.imagesDone += images;
  batch.totals.imagesFailed += images;
  if (batch.totals.failedShards.length < MAX_FAILED_SHARDS_LISTED) {
    batch.totals.failedShards.push({ index, error: message });
  }
}

function upsertTotals(batch: BatchState): void {
  upsertSearchAttributes([
    { key: attributes.IMAGES_FAILED, value: batch.totals.imagesFailed },
    { key: attributes.COST_USD, value: batch.totals.costUsd },
  ]);
}
