/**
 * The shard activity. It processes a contiguous range of the batch listing and checkpoints as
 * it goes. Every `checkpointEvery` images, or after 10 s with any new image, the records since
 * the last checkpoint are written as one part object and the cursor is heartbeated. A retried
 * attempt resumes at that cursor, and the final JSONL is assembled from the checkpointed parts
 * only, so every input appears exactly once however often the shard was interrupted.
 */
import { ApplicationFailure } from '@temporalio/common';
import { CancelledFailure, Context, log } from '@temporalio/activity';
import type { ObjectStore } from './storage/object-store';
import { joinUri } from './storage/uri';
import { sha256Hex } from './storage/hash';
import type { ModelRegistry } from './registry/model-registry';
import type { ModelRunner } from './inference/model-runner';
import { FailureType } from './failures';
import type { CostMeter, LeaseFigures } from './cost-meter';
import type { Drain } from './drain';
import type { ProcessTrace } from './process-trace';
import { emptyTimings, inferImages, postprocessImages, prepareImage, type PreparedImage } from './process-image';
import { shardLineage } from './lineage';
import type { Capacity, OutputRecord, ShardCheckpoint, ShardInput, ShardPart, ShardResult } from './types';

/** Maximum time between checkpoints while images complete, in milliseconds. */
export const CHECKPOINT_INTERVAL_MS = 10_000;
/** Images downloaded and decoded ahead of the one in inference, unless the worker sets another depth. */
export const DEFAULT_PREFETCH_DEPTH = 4;
/** Heartbeat period while no checkpoint is due, e.g. during one long inference call. */
export const HEARTBEAT_INTERVAL_MS = 3_000;

export interface ShardDeps {
  store: ObjectStore;
  registry: ModelRegistry;
  runner: ModelRunner;
  capacity: Capacity;
  costMeter: CostMeter;
  /** Set when the worker drains; running shards then hand back their checkpoint. */
  drain: Drain;
  trace?: ProcessTrace;
  /** Images prepared ahead of inference; 1 turns prefetching off. */
  prefetchDepth?: number;
  /** Images per model call, for models with a dynamic batch dimension; 1 by default. */
  inferenceBatch?: number;
}

export function shardName(index: number): string {
  return `shard-${String(index).padStart(5, '0')}`;
}

export function shardOutputUri(outputUri: string, index: number): string {
  return joinUri(outputUri, 'shards', `${shardName(index)}.jsonl`);
}

export function shardResultUri(outputUri: string, index: number): string {
  return joinUri(outputUri, 'shards', `${shardName(index)}.result.json`);
}

export function shardPartsUri(outputUri: string, index: number): string {
  return joinUri(outputUri, 'parts', shardName(index));
}

/**
 * Key of the part that starts at shard offset `start`. Checkpoints carry offsets only, so a
 * checkpoint stays small however many parts a shard has.
 */
export function shardPartUri(outputUri: string, index: number, start: number): string {
  return joinUri(shardPartsUri(outputUri, index), `part-${String(start).padStart(5, '0')}.jsonl`);
}

/**
 * Loads the model into the runner unless a session for its sha256 is already cached. Returns the
 * load time in milliseconds, or null on a cache hit.
 */
export async function ensureModelLoaded(deps: Pick<ShardDeps, 'registry' | 'runner' | 'capacity'>, model: ShardInput['model']): Promise<number | null> {
  if (deps.runner.has(model.sha256)) return null;
  const bytes = await deps.registry.readArtifact(model);
  try {
    return (await deps.runner.load(model, bytes)).loadMs;
  } catch (err) {
    if (err instanceof Error && err.name === FailureType.ModelChecksumMismatch) {
      throw ApplicationFailure.create({ message: err.message, type: FailureType.ModelChecksumMismatch, nonRetryable: true });
    }
    // A missing execution provider library is this host's problem: another host may run it.
    if (/ExecutionProvider|shared library/i.test((err as Error).message)) {
      throw ApplicationFailure.create({ message: `Host ${deps.capacity.host} cannot create a session for ${model.name}@${model.version}: ${(err as Error).message}`, type: 'ExecutionProviderUnavailable' });
    }
    // The bytes match the registry, so onnxruntime rejecting them will not change on retry.
    throw ApplicationFailure.create({
      message: `Model ${model.name}@${model.version} could not be loaded by onnxruntime: ${(err as Error).message}. Register a valid ONNX file under a new version.`,
      type: FailureType.ModelLoadFailed,
      nonRetryable: true,
    });
  }
}

export function createRunShard(deps: ShardDeps) {
  return async function runShard(input: ShardInput): Promise<ShardResult> {
    const context = Context.current();
    const { attempt } = input;
    const resumed = (context.info.heartbeatDetails as ShardCheckpoint | undefined) ?? input.resume;
    const fresh: ShardCheckpoint = { cursor: 0, parts: [], priorSeconds: 0, priorCostUsd: 0, attempt, capacity: deps.capacity };
    let checkpoint: ShardCheckpoint = resumed ?? fresh;
    const resumedFrom = checkpoint.cursor;
    const fields = { batchId: input.batchId, shard: input.shardIndex, attempt };
    log.info('Shard started', { ...fields, cursor: resumedFrom, images: input.images });

    const loadMs = input.dryRun ? null : await ensureModelLoaded(deps, input.model);
    const modelName = `${input.model.name}@${input.model.version}`;
    const requestedProviders = deps.runner.executionProvidersFor(input.model);
    // The providers of the session that runs the shard, which lineage records. A session cached
    // for the same bytes under another registration may have other providers than requested.
    const executionProviders = deps.runner.sessionProviders(input.model.sha256) ?? requestedProviders;
    if (loadMs !== null) log.info('Model loaded', { ...fields, model: modelName, loadMs, executionProviders: executionProviders.join(',') });
    if (!input.dryRun && executionProviders.join(',') !== requestedProviders.join(',')) {
      log.warn('Model runs in a cached session with other execution providers', { ...fields, model: modelName, sessionProviders: executionProviders.join(','), requestedProviders: requestedProviders.join(',') });
    }
    const listing = (await deps.store.get(input.listingUri, context.cancellationSignal)).body.toString('utf8').split('\n').filter(Boolean);
    if (listing.length !== input.images) {
      throw ApplicationFailure.nonRetryable(
        `Shard listing ${input.listingUri} has ${listing.length} images, expected ${input.images}; the listing was changed after the batch started.`,
        'ShardListingMismatch',
      );
    }

    const lease = deps.costMeter.start();
    const timings = emptyTimings();
    const beat = setInterval(() => context.heartbeat(checkpoint), HEARTBEAT_INTERVAL_MS);
    let pending: OutputRecord[] = [];
    let lastCheckpointMs = Date.now();
    let partStart = checkpoint.cursor;

    // NOTE: a part's key depends only on its start offset, so a worker that was paused past its
    // heartbeat timeout can still overwrite the part a newer attempt wrote there. Assembly then
    // finds a line count that does not match and fails that attempt, which costs a retry.
    const commitPart = async (cursor: number) => {
      const uri = shardPartUri(input.outputUri, input.shardIndex, partStart);
      const uploadStart = performance.now();
      await deps.store.put(uri, toJsonl(pending), { contentType: 'application/x-ndjson' });
      timings.uploadMs += performance.now() - uploadStart;
      const failed = pending.filter((record) => record.status === 'failed').length;
      const part: ShardPart = { start: partStart, end: cursor, ok: pending.length - failed, failed };
      const spent = lease.read();
      checkpoint = {
        cursor,
        parts: [...checkpoint.parts, part],
        priorSeconds: (resumed?.priorSeconds ?? 0) + spent.seconds,
        priorCostUsd: (resumed?.priorCostUsd ?? 0) + spent.costUsd,
        attempt,
        capacity: deps.capacity,
      };
      context.heartbeat(checkpoint);
      log.debug('Shard checkpoint', { ...fields, cursor });
      pending = [];
      partStart = cursor;
      lastCheckpointMs = Date.now();
    };

    const jobAt = (cursor: number) => ({
      index: input.firstIndex + cursor,
      uri: listing[cursor],
      model: input.model,
      outputUri: input.outputUri,
      maxPixels: input.maxPixels,
      topK: input.topK,
      signal: context.cancellationSignal,
    });
    // Downloads and decodes run up to `prefetchDepth` images ahead of inference, so the model
    // thread does not wait on storage or sharp. Memory is bounded by the depth (one decoded
    // tensor each, about 5 MB at 640x640). A prefetch that fails is only thrown when awaited.
    const prefetched = new Map<number, { promise: Promise<PreparedImage>; startedMs: number }>();
    const prefetch = (from: number, atLeast: number) => {
      const depth = Math.max(deps.prefetchDepth ?? DEFAULT_PREFETCH_DEPTH, atLeast);
      for (let ahead = from; ahead < Math.min(from + depth, input.images); ahead++) {
        if (prefetched.has(ahead)) continue;
        const promise = prepareImage(deps, jobAt(ahead), timings);
        promise.catch(() => undefined);
        prefetched.set(ahead, { promise, startedMs: performance.now() });
      }
    };
    // Model outputs are postprocessed and their masks uploaded while the model runs the next
    // groups, at most `prefetchDepth - 1` groups behind it (one output map each, about 1.6 MB at
    // 640x640). Records join `pending` in listing order, so a checkpoint never skips an image.
    const finishDepth = Math.max(1, deps.prefetchDepth ?? DEFAULT_PREFETCH_DEPTH);
    const finishing: Array<{ entries: Array<{ startedMs: number }>; records: Promise<OutputRecord[]> }> = [];
    const accept = (records: OutputRecord[], entries: Array<{ startedMs: number }>) => {
      records.forEach((record, offset) => {
        deps.trace?.({ batchId: input.batchId, shard: input.shardIndex, attempt, index: record.index, host: deps.capacity.host, ms: performance.now() - entries[offset].startedMs });
        if (record.status === 'failed') log.warn('Image failed', { ...fields, index: record.index, input: record.input, error: record.error });
        pending.push(record);
      });
    };
    const checkpointIfDue = async () => {
      const done = partStart + pending.length;
      const due = pending.length >= input.checkpointEvery || Date.now() - lastCheckpointMs >= CHECKPOINT_INTERVAL_MS;
      if (pending.length > 0 && due && done < input.images) await commitPart(done);
    };
    // Set when a group's postprocessing failed: later groups then follow a gap and are dropped.
    let gap = false;
    const settleOldest = async () => {
      const { entries, records } = finishing.shift()!;
      let settled: OutputRecord[];
      try {
        settled = await records;
      } catch (err) {
        gap = true;
        throw err;
      }
      accept(settled, entries);
      await checkpointIfDue();
    };
    const busyStart = performance.now();
    let stopped: LeaseFigures;

    try {
      for (let cursor = checkpoint.cursor; cursor < input.images; ) {
        if (context.cancellationSignal.aborted) throw new CancelledFailure('Shard cancelled');
        if (deps.drain.signal.aborted) {
          while (finishing.length > 0) await settleOldest();
          if (pending.length > 0) await commitPart(partStart + pending.length);
          throw spotInterruption(input, checkpoint, deps.drain.reason ?? 'drain');
        }
        if (input.dryRun) {
          const job = jobAt(cursor);
          pending.push({ index: job.index, input: job.uri, inputEtag: null, status: 'skipped', modelSha256: input.model.sha256 });
          cursor += 1;
          await checkpointIfDue();
          continue;
        }
        // A group of up to `inferenceBatch` images goes through one model call.
        const group = Math.min(deps.inferenceBatch ?? 1, input.images - cursor);
        prefetch(cursor, group);
        const jobs = Array.from({ length: group }, (_, offset) => jobAt(cursor + offset));
        const entries = jobs.map((_, offset) => prefetched.get(cursor + offset)!);
        for (let offset = 0; offset < group; offset++) prefetched.delete(cursor + offset);
        const inferred = await inferImages(deps, jobs, await Promise.all(entries.map((entry) => entry.promise)), timings);
        const records = postprocessImages(deps, jobs, inferred, timings);
        // A failed upload is thrown when its group is settled, in order, so it is never unhandled.
        records.catch(() => undefined);
        finishing.push({ entries, records });
        cursor += group;
        while (finishing.length >= finishDepth) await settleOldest();
        prefetch(cursor, 1);
      }
      while (finishing.length > 0) await settleOldest();
      if (pending.length > 0) await commitPart(input.images);
    } catch (err) {
      // Groups already finished behind the failure are kept, in order, up to the first that
      // failed; none may still write after the attempt has ended.
      while (!gap && finishing.length > 0) {
        const { entries, records } = finishing.shift()!;
        const settled = await records.then((value) => value, () => null);
        if (settled === null) break;
        accept(settled, entries);
      }
      await Promise.allSettled(finishing.map(({ records }) => records));
      throw await failAttempt(err, input, () => checkpoint, pending.length > 0 ? () => commitPart(partStart + pending.length) : null);
    } finally {
      clearInterval(beat);
      timings.wallMs += performance.now() - busyStart;
      stopped = lease.stop();
    }
    const { idleCostUsd } = stopped;

    const assembled = await assembleShard(deps.store, input, checkpoint.parts);
    const attemptCostUsd = checkpoint.priorCostUsd - (resumed?.priorCostUsd ?? 0);
    const result: ShardResult = {
      shardIndex: input.shardIndex,
      output: shardOutputUri(input.outputUri, input.shardIndex),
      outputSha256: assembled.sha256,
      images: input.images,
      ok: assembled.ok,
      failed: assembled.failed,
      resumedFrom,
      attempt,
      model: { name: input.model.name, version: input.model.version, sha256: input.model.sha256 },
      capacity: deps.capacity,
      timings: roundTimings(timings),
      wallSeconds: Math.round(checkpoint.priorSeconds * 1000) / 1000,
      costUsd: checkpoint.priorCostUsd,
      lineage: shardLineage(input.model, executionProviders, deps.capacity),
      attempts: [
        ...input.previousAttempts,
        {
          attempt,
          taskQueue: context.info.taskQueue,
          capacity: deps.capacity,
          outcome: 'completed',
          startCursor: resumedFrom,
          endCursor: input.images,
          costUsd: attemptCostUsd,
          idleCostUsd,
        },
      ],
    };
    await deps.store.put(shardResultUri(input.outputUri, input.shardIndex), JSON.stringify(result, null, 2), {
      contentType: 'application/json',
    });
    log.info('Shard completed', { ...fields, ok: result.ok, failed: result.failed, resumedFrom, wallSeconds: result.wallSeconds });
    return result;
  };
}

/** Creates the retryable failure a draining worker ends a shard with, carrying the checkpoint. */
function spotInterruption(input: ShardInput, checkpoint: ShardCheckpoint, reason: string): ApplicationFailure {
  return ApplicationFailure.create({
    message: `Shard ${input.shardIndex} handed back at offset ${checkpoint.cursor} of ${input.images} because its worker is draining (${reason}).`,
    type: FailureType.SpotInterruption,
    details: [checkpoint],
  });
}

/**
 * Turns an error inside the image loop into the attempt's failure. Records already processed
 * are committed first where possible, so the next attempt resumes at the image that failed.
 * The failure's details carry the checkpoint for the workflow to pass on.
 */
async function failAttempt(
  err: unknown,
  input: ShardInput,
  checkpoint: () => ShardCheckpoint,
  commitPending: (() => Promise<void>) | null,
): Promise<unknown> {
  if (err instanceof CancelledFailure) return err;
  if (err instanceof ApplicationFailure && (err.nonRetryable || err.type === FailureType.SpotInterruption)) return err;
  if (commitPending) {
    try {
      await commitPending();
    } catch (commitError) {
      log.warn('Could not checkpoint before failing', { batchId: input.batchId, shard: input.shardIndex, error: String(commitError) });
    }
  }
  const error = err instanceof Error ? err : new Error(String(err));
  return ApplicationFailure.create({
    message: `Shard ${input.shardIndex} failed at offset ${checkpoint().cursor}: ${error.message}`,
    type: error.name === 'Error' ? 'ShardError' : error.name,
    details: [checkpoint()],
    cause: error,
  });
}

/**
 * Concatenates the checkpointed parts into the shard's JSONL. Parts written by an attempt that
 * died before heartbeating them are not in the list, so they never reach the output.
 */
async function assembleShard(store: ObjectStore, input: ShardInput, parts: ShardPart[]) {
  let expected = 0;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    if (part.start !== expected) {
      throw new Error(`Shard ${input.shardIndex}: checkpoint parts are not contiguous at offset ${part.start}, expected ${expected}.`);
    }
    const body = (await store.get(shardPartUri(input.outputUri, input.shardIndex, part.start))).body;
    // A part overwritten by a stray older attempt would hold another range; never assemble it.
    const lines = body.length === 0 ? 0 : body.toString('utf8').trimEnd().split('\n').length;
    if (lines !== part.end - part.start) {
      throw new Error(`Shard ${input.shardIndex}: part at offset ${part.start} has ${lines} lines, expected ${part.end - part.start}.`);
    }
    chunks.push(body);
    expected = part.end;
  }
  if (expected !== input.images) {
    throw new Error(`Shard ${input.shardIndex}: checkpoint parts end at offset ${expected}, expected ${input.images}.`);
  }
  const body = Buffer.concat(chunks);
  await store.put(shardOutputUri(input.outputUri, input.shardIndex), body, { contentType: 'application/x-ndjson' });
  const failed = parts.reduce((sum, part) => sum + part.failed, 0);
  return { sha256: sha256Hex(body), ok: input.images - failed, failed };
}

function toJsonl(records: OutputRecord[]): string {
  return records.map((record) => JSON.stringify(record)).join('\n') + '\n';
}

function roundTimings(timings: ReturnType<typeof emptyTimings>) {
  return {
    wallMs: Math.round(timings.wallMs),
    inferenceBusyFraction: timings.wallMs > 0 ? Math.round((timings.inferenceMs / timings.wallMs) * 1000) / 1000 : 0,
    downloadMs: Math.round(timings.downloadMs),
    decodeMs: Math.round(timings.decodeMs),
    inferenceMs: Math.round(timings.inferenceMs),
    postprocessMs: Math.round(timings.postprocessMs),
    uploadMs: Math.round(timings.uploadMs),
  };
}
