/**
 * `skynewt run|status|results`: start a batch, watch it, and read its manifest.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { WorkflowExecutionAlreadyStartedError, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { toFileUri } from '../activities/storage/uri';
import { encryptingDataConverter } from '../activities/codec/aes-gcm-codec';
import { failureReason, readManifest, SkyNewtClient } from '../client/skynewt-client';
import type { BatchInput } from '../workflows/batch-input';
import type { BatchSummary, Utilisation } from '../workflows/batch-state';
import { stackStatus } from '../infra/local/stack';
import { loadConfig } from '../workers/config';
import { formatUsd, printJson, printTable, UsageError } from './output';
import { runEstimate } from './estimate-command';
import { watchProgress } from './progress-bar';

export interface RunOptions {
  model: string;
  output?: string;
  shardSize?: string;
  checkpointEvery?: string;
  maxConcurrentShards?: string;
  maxPixels?: string;
  topK?: string;
  taskQueue?: string;
  onDemandTaskQueue?: string;
  preemptionsBeforeOnDemand?: string;
  batchId?: string;
  wait?: boolean;
  json?: boolean;
  estimate?: boolean;
}

/** A batch that ended without completing; the CLI prints the reason and exits with 1. */
export class BatchFailedError extends UsageError {
  constructor(readonly batchId: string, readonly reason: string) {
    super(`Batch ${batchId} failed: ${reason}\nDetails: ${workflowUrl(batchId)}`);
  }
}

/** Turns the SDK's errors about one batch into messages that name the batch and the next step. */
export function explainBatchError(batchId: string, err: unknown): unknown {
  if (err instanceof WorkflowNotFoundError) {
    const config = loadConfig();
    return new UsageError(`Batch ${batchId} not found on ${config.address} (namespace ${config.namespace}); list batches with: temporal workflow list --address ${config.address}`);
  }
  if (err instanceof WorkflowExecutionAlreadyStartedError) {
    return new UsageError(`Batch id ${batchId} is already used by another batch; choose another --batch-id.`);
  }
  if (err instanceof WorkflowFailedError) return new BatchFailedError(batchId, failureReason(err));
  return err;
}

/** Turns a plain local path into a `file://` URI and checks that it exists; URIs pass unchanged. */
export function toInputUri(value: string, mustExist: boolean): string {
  if (value.startsWith('s3://') || value.startsWith('file://')) return value;
  const absolute = path.resolve(value);
  if (mustExist && !existsSync(absolute)) {
    throw new UsageError(`Input ${value} does not exist (resolved to ${absolute}); give a folder, an image, a manifest file or an s3:// URI.`);
  }
  return toFileUri(absolute);
}

function integerOption(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const number = Number(value);
  if (!Number.isInteger(number)) throw new UsageError(`Invalid ${flag} ${JSON.stringify(value)}: expected a whole number.`);
  return number;
}

export async function connectClient(): Promise<SkyNewtClient> {
  const config = loadConfig();
  try {
    const dataConverter = config.payloadKeyring ? encryptingDataConverter(config.payloadKeyring) : undefined;
    return await SkyNewtClient.connect({ address: config.address, namespace: config.namespace, dataConverter });
  } catch (err) {
    throw new UsageError(`Cannot reach Temporal at ${config.address} (${(err as Error).message}). Start the local stack with: skynewt up`);
  }
}

export function workflowUrl(batchId: string): string {
  const config = loadConfig();
  return `${config.uiUrl}/namespaces/${config.namespace}/workflows/${encodeURIComponent(batchId)}`;
}

/** Describes in one line where completed shards spent their time, e.g. for `skynewt status`. */
export function describeUtilisation(value: Utilisation): string {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const { stages } = value;
  return `model busy ${(value.inferenceBusyFraction * 100).toFixed(0)}% of shard time; bottleneck ${value.bottleneck} ` +
    `(download ${seconds(stages.downloadMs)}, decode ${seconds(stages.decodeMs)}, inference ${seconds(stages.inferenceMs)}, ` +
    `postprocess ${seconds(stages.postprocessMs)}, upload ${seconds(stages.uploadMs)}, wall ${seconds(stages.wallMs)})`;
}

export function summaryRows(summary: BatchSummary): Record<string, string> {
  return {
    batch: summary.batchId,
    status: summary.status,
    images: `${summary.images - summary.imagesFailed} ok, ${summary.imagesFailed} failed, ${summary.images} in all`,
    shards: `${summary.shards}${summary.shardsFailed ? ` (${summary.shardsFailed} failed: ${summary.failedShards.map((shard) => shard.error).join('; ')})` : ''}`,
    model: `${summary.model.name}@${summary.model.version}`,
    sha256: summary.model.sha256,
    cost: formatUsd(summary.costUsd),
    results: summary.output,
    manifest: summary.manifest,
    'web ui': workflowUrl(summary.batchId),
  };
}

/** Starts a batch; with `wait`, follows it to the end and returns its summary. */
/**
 * Returns the queue a shard moves to after repeated capacity losses when the batch runs on the
 * local stack: the inference queue itself, because `skynewt up` starts no on-demand workers and
 * a moved shard would wait for ever. Elsewhere it returns undefined, for the workflow's default.
 */
function localOnDemandQueue(taskQueue: string | undefined): string | undefined {
  const config = loadConfig();
  const stack = stackStatus(config.home);
  if (stack === null || !stack.running || stack.state.address !== config.address) return undefined;
  return taskQueue ?? config.inferenceTaskQueue;
}

export async function runBatch(client: SkyNewtClient, input: string, options: RunOptions): Promise<BatchSummary | string> {
  if (options.batchId !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/.test(options.batchId)) {
    throw new UsageError(`Invalid --batch-id ${JSON.stringify(options.batchId)}: expected 1–100 letters, digits, ".", "_" or "-", starting with a letter or digit.`);
  }
  const batch: BatchInput = {
    input: toInputUri(input, !input.startsWith('s3://')),
    model: options.model,
    output: options.output === undefined ? undefined : toInputUri(options.output, false),
    batchId: options.batchId,
    shardSize: integerOption('--shard-size', options.shardSize),
    checkpointEvery: integerOption('--checkpoint-every', options.checkpointEvery),
    maxConcurrentShards: integerOption('--max-concurrent-shards', options.maxConcurrentShards),
    maxPixels: integerOption('--max-pixels', options.maxPixels),
    topK: integerOption('--top-k', options.topK),
    taskQueue: options.taskQueue,
    onDemandTaskQueue: options.onDemandTaskQueue ?? localOnDemandQueue(options.taskQueue),
    preemptionsBeforeOnDemand: integerOption('--preemptions-before-on-demand', options.preemptionsBeforeOnDemand),
  };
  const { batchId } = await client.startBatch(batch).catch((err: unknown) => {
    throw explainBatchError(batch.batchId ?? '', err);
  });
  if (!options.wait) return batchId;

  const interactive = Boolean(process.stderr.isTTY) && !options.json;
  const stop = interactive ? watchProgress(client, batchId) : () => undefined;
  try {
    return await client.result(batchId);
  } catch (err) {
    throw explainBatchError(batchId, err);
  } finally {
    stop();
  }
}

export function addBatchCommands(program: Command): void {
  program
    .command('run <input>')
    .description('run a batch over a folder, file:// or s3:// URI, or a manifest file of image URIs')
    .requiredOption('--model <model>', 'registered model as NAME or NAME@VERSION')
    .option('--output <uri>', 'output root (default: .skynewt/results)')
    .option('--shard-size <n>', 'images per shard, 1-5000', '200')
    .option('--checkpoint-every <n>', 'images between checkpoints, 1 to the shard size')
    .option('--max-concurrent-shards <n>', 'shards in flight at once, 1-500')
    .option('--max-pixels <n>', 'largest image in pixels; larger ones are recorded as failed')
    .option('--top-k <n>', 'labels kept per image for classification models, 1-100')
    .option('--task-queue <name>', 'task queue of the inference workers (default skynewt-gpu-spot)')
    .option('--on-demand-task-queue <name>', 'task queue a shard moves to after repeated capacity losses (default skynewt-gpu-ondemand; on the local stack, the --task-queue)')
    .option('--preemptions-before-on-demand <n>', 'capacity losses of one shard before it moves to the on-demand queue, 0-50 (default 3)')
    .option('--batch-id <id>', 'batch id (default: a new time-ordered id)')
    .option('--wait', 'wait for the batch to finish and print its summary')
    .option('--json', 'print JSON')
    .option('--estimate', 'print the estimated duration and cost per instance type (see skynewt estimate) and do not start the batch')
    .action(async (input: string, options: RunOptions) => {
      if (options.estimate) return runEstimate(input, { model: options.model, json: options.json });
      const client = await connectClient();
      let outcome;
      try {
        outcome = await runBatch(client, input, options);
      } catch (err) {
        // With --json, a failed batch is still one JSON object on stdout.
        if (options.json && err instanceof BatchFailedError) printJson({ batchId: err.batchId, workflowId: err.batchId, status: 'failed', error: err.reason });
        throw err;
      }
      if (typeof outcome === 'string') {
        if (options.json) return printJson({ batchId: outcome, workflowId: outcome, status: 'running', webUi: workflowUrl(outcome) });
        console.log(outcome);
        return;
      }
      if (outcome.status !== 'completed') process.exitCode = 2;
      if (options.json) return printJson({ ...outcome, webUi: workflowUrl(outcome.batchId) });
      printTable([summaryRows(outcome)], true);
    });

  program
    .command('status <batch>')
    .description("show a batch's progress (the workflow's progress query)")
    .option('--json', 'print JSON')
    .action(async (batchId: string, options: { json?: boolean }) => {
      const client = await connectClient();
      const progress = await client.liveProgress(batchId).catch((err: unknown) => {
        throw explainBatchError(batchId, err);
      });
      if (options.json) return printJson(progress);
      printTable([{
        batch: progress.batchId,
        status: `${progress.status} (workflow ${progress.executionStatus})`,
        model: progress.model ?? '-',
        shards: `${progress.shardsDone} done, ${progress.shardsFailed} failed, ${progress.shardsRunning} in flight, ${progress.shards} in all`,
        images: `${progress.imagesDone} done (+${progress.imagesInFlight} checkpointed in running shards), ${progress.imagesFailed} failed, ${progress.images} in all`,
        cost: formatUsd(progress.costUsd),
        ...(progress.utilisation ? { utilisation: describeUtilisation(progress.utilisation) } : {}),
        output: progress.output ?? '-',
        ...(progress.error ? { error: progress.error } : {}),
        'web ui': workflowUrl(batchId),
      }], true);
    });

  program
    .command('cancel <batch>')
    .description('cancel a running batch; running shards stop at their next image')
    .action(async (batchId: string) => {
      const client = await connectClient();
      const progress = await client.liveProgress(batchId).catch((err: unknown) => {
        throw explainBatchError(batchId, err);
      });
      // The server accepts a cancel request for a closed workflow without an error, so check first.
      if (progress.executionStatus !== 'RUNNING') {
        throw new UsageError(`Batch ${batchId} is not running (workflow ${progress.executionStatus}); there is nothing to cancel. See it with: skynewt status ${batchId}`);
      }
      await client.cancel(batchId).catch((err: unknown) => {
        throw explainBatchError(batchId, err);
      });
      console.log(`Cancellation requested for ${batchId}; follow it with: skynewt status ${batchId}`);
    });

  program
    .command('results <batchOrManifest>')
    .description("print a finished batch's manifest (by batch id, or a manifest URI or path)")
    .option('--json', 'print the manifest as JSON')
    .action(async (reference: string, options: { json?: boolean }) => {
      const isManifest = reference.endsWith('.json') || reference.includes('://');
      let manifest;
      if (isManifest) {
        manifest = await readManifest(toInputUri(reference, !reference.startsWith('s3://')));
      } else {
        const client = await connectClient();
        const progress = await client.liveProgress(reference).catch((err: unknown) => {
          throw explainBatchError(reference, err);
        });
        if (progress.executionStatus === 'RUNNING') throw new UsageError(`Batch ${reference} is still running; follow it with: skynewt status ${reference}`);
        if (progress.executionStatus === 'CANCELLED') {
          throw new UsageError(`Batch ${reference} was cancelled, so it has no manifest; the shards it finished are under ${progress.output ?? 'its output'}/shards/.`);
        }
        if (progress.error) throw new BatchFailedError(reference, progress.error);
        manifest = await client.manifest(reference);
      }
      if (options.json) return printJson(manifest);
      printTable([{
        batch: manifest.batchId,
        model: `${manifest.model.name}@${manifest.model.version} (sha256 ${manifest.model.sha256})`,
        images: `${manifest.imagesOk} ok, ${manifest.imagesFailed} failed, ${manifest.images} in all`,
        cost: formatUsd(manifest.costUsd),
        ...(manifest.utilisation ? { utilisation: describeUtilisation(manifest.utilisation) } : {}),
        output: manifest.output,
      }], true);
      console.log('');
      printTable(manifest.shards.map((shard) => ({
        shard: shard.index,
        images: shard.images,
        failed: shard.failed,
        attempt: shard.attempt,
        host: `${shard.capacity.host} (${shard.capacity.lifecycle})`,
        output: shard.output,
        sha256: shard.sha256.slice(0, 16),
      })));
      for (const failed of manifest.failedShards) console.log(`shard ${failed.shardIndex} failed after ${failed.attempts.length} attempts: ${failed.error}`);
    });
}
