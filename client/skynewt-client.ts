/**
 * Typed client for upstream services: start a batch, read its progress, cancel it, wait for its
 * summary and read its manifest. A batch's workflow id is its batch id.
 */
import { randomBytes } from 'node:crypto';
import { temporal } from '@temporalio/proto';
import { Client, Connection, WorkflowNotFoundError, type WorkflowHandle } from '@temporalio/client';
import type { DataConverter, Payload } from '@temporalio/common';
import type { ShardCheckpoint } from '../activities/types';
import type { ObjectStore } from '../activities/storage/object-store';
import { createObjectStore } from '../activities/storage/stores';
import type { BatchManifest } from '../activities/write-manifest';
import type { BatchInput } from '../workflows/batch-input';
import type { BatchProgress, BatchSummary } from '../workflows/batch-state';
import type { batchInference } from '../workflows/batch-inference';
import { temporalConnectionOptions } from '../workers/temporal-connection';
import { BATCH_WORKFLOW_TYPE, ORCHESTRATOR_TASK_QUEUE, PROGRESS_QUERY } from '../workflows/names';

export interface SkyNewtClientOptions {
  client: Client;
  /** Store used to read manifests; defaults to one that reads local files and S3. */
  store?: ObjectStore;
  taskQueue?: string;
}

/** Progress plus the checkpointed cursors of shards still running. */
export interface LiveProgress extends BatchProgress {
  /** Images checkpointed by running shards, not yet counted in imagesDone. */
  imagesInFlight: number;
  /** Workflow execution status as the server reports it (RUNNING, COMPLETED, FAILED, ...). */
  executionStatus: string;
  /** Reason the batch failed or ended, for a batch that did not complete. */
  error?: string;
}

/** One batch found by model, from the server's visibility store. */
export interface ModelBatch {
  batchId: string;
  /** Latest run of the batch; earlier runs were continued as new. */
  runId: string;
  /** Execution status of the latest run, e.g. RUNNING, COMPLETED, FAILED. */
  status: string;
  startTime: string;
  closeTime: string | null;
  /** Alias the batch was started with, e.g. `production`, when it named one. */
  modelAlias: string | null;
  /** Manifest URI, once the batch has finished. */
  manifest: string | null;
}

const EMPTY_PROGRESS: BatchProgress = {
  batchId: '',
  status: 'starting',
  model: null,
  shards: 0,
  shardsDone: 0,
  shardsFailed: 0,
  shardsRunning: 0,
  images: 0,
  imagesDone: 0,
  imagesFailed: 0,
  costUsd: 0,
  output: null,
  run: 1,
  utilisation: null,
};

export class SkyNewtClient {
  readonly client: Client;
  private readonly store: ObjectStore;
  private readonly taskQueue: string;

  constructor(options: SkyNewtClientOptions) {
    this.client = options.client;
    this.store = options.store ?? createObjectStore();
    this.taskQueue = options.taskQueue ?? ORCHESTRATOR_TASK_QUEUE;
  }

  /**
   * Connects to the server. Pass `dataConverter` (e.g. `encryptingDataConverter(keyring)`) when the
   * workers encrypt payloads, or the client cannot read inputs, results, queries or heartbeats.
   * The CLI passes one whenever SKYNEWT_PAYLOAD_KEY or SKYNEWT_PAYLOAD_KEY_FILE is set.
   */
  static async connect(options: { address: string; namespace?: string; store?: ObjectStore; dataConverter?: DataConverter }): Promise<SkyNewtClient> {
    // Fail within seconds when no server listens, instead of the SDK's longer default wait.
    const connection = await Connection.connect({ ...temporalConnectionOptions(options.address), connectTimeout: '3 seconds' });
    const client = new Client({ connection, namespace: options.namespace ?? 'default', dataConverter: options.dataConverter });
    return new SkyNewtClient({ client, store: options.store });
  }

  /** Starts a batch and returns its ids; the batch id defaults to a new time-ordered id. */
  async startBatch(input: BatchInput): Promise<{ batchId: string; workflowId: string; runId: string }> {
    const batchId = input.batchId ?? newBatchId();
    const handle = await this.client.workflow.start<typeof batchInference>(BATCH_WORKFLOW_TYPE, {
      taskQueue: this.taskQueue,
      workflowId: batchId,
      args: [{ ...input, batchId }],
      // A batch id names one set of outputs; reusing it would overwrite a finished batch.
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
    });
    return { batchId, workflowId: handle.workflowId, runId: handle.firstExecutionRunId };
  }

  /** Returns the batch's workflow handle; the batch id is its workflow id. */
  handle(batchId: string): WorkflowHandle<typeof batchInference> {
    return this.client.workflow.getHandle<typeof batchInference>(batchId);
  }

  async progress(batchId: string): Promise<BatchProgress> {
    return this.handle(batchId).query<BatchProgress>(PROGRESS_QUERY);
  }

  /**
   * Returns progress including running shards' last checkpoints, read from the pending
   * activities. For a batch that ended without completing, `status` is how it ended and `error`
   * is the reason.
   */
  async liveProgress(batchId: string): Promise<LiveProgress> {
    const handle = this.handle(batchId);
    const description = await handle.describe();
    const executionStatus = description.status.name;
    // The query needs a worker to replay the history, so a closed batch may return no result.
    const queried = await handle.query<BatchProgress>(PROGRESS_QUERY).catch(() => null);
    const progress: BatchProgress = queried ?? { ...EMPTY_PROGRESS, batchId, status: executionStatus === 'COMPLETED' ? 'completed' : 'starting' };

    let imagesInFlight = 0;
    for (const activity of description.raw.pendingActivities ?? []) {
      const payload = activity.heartbeatDetails?.payloads?.[0];
      if (!payload) continue;
      const checkpoint = await this.decodePayload<ShardCheckpoint>(payload);
      imagesInFlight += checkpoint?.cursor ?? 0;
    }
    if (executionStatus === 'RUNNING' || executionStatus === 'COMPLETED' || executionStatus === 'CONTINUED_AS_NEW') {
      return { ...progress, imagesInFlight, executionStatus };
    }

    const error = await handle.result().then(() => undefined, (err: unknown) => failureReason(err));
    const status = executionStatus === 'CANCELLED' ? 'cancelled' : 'failed';
    return { ...progress, status, imagesInFlight: 0, executionStatus, error };
  }

  /** Decodes a raw payload from a describe response with the client's codecs and payload converter. */
  private async decodePayload<T>(payload: Payload): Promise<T> {
    const converter = this.client.options.loadedDataConverter;
    let decoded = [payload];
    // Codecs decode in the reverse of their encoding order, as the SDK applies them.
    for (const codec of [...converter.payloadCodecs].reverse()) decoded = await codec.decode(decoded);
    return converter.payloadConverter.fromPayload<T>(decoded[0]);
  }

  async cancel(batchId: string): Promise<void> {
    await this.handle(batchId).cancel();
  }

  /** Waits for the batch to finish and returns its summary; rejects if the batch failed. */
  async result(batchId: string): Promise<BatchSummary> {
    return this.handle(batchId).result();
  }

  async manifest(batchId: string): Promise<BatchManifest> {
    const summary = await this.result(batchId);
    return this.readManifest(summary.manifest);
  }

  async readManifest(uri: string): Promise<BatchManifest> {
    return readManifest(uri, this.store);
  }

  /**
   * Lists the batches that ran model version `name@version`, newest first, by the SkyNewtModel
   * search attribute. Visibility is eventually consistent, so a batch started a moment ago may
   * be missing.
   */
  async batchesUsingModel(name: string, version: string): Promise<ModelBatch[]> {
    const value = `${name}@${version}`.replace(/\\/g, '\\\\').replace(/'/g, "\\'");
    const latest = new Map<string, ModelBatch>();
    // The SDK's list decodes every memo and fails on a batch whose memo another key encrypted.
    // The raw visibility API leaves such memo fields out instead.
    let nextPageToken: Uint8Array | undefined;
    do {
      const page = await this.client.workflowService.listWorkflowExecutions({
        namespace: this.client.options.namespace,
        query: `SkyNewtModel = '${value}'`,
        nextPageToken,
      });
      for (const execution of page.executions ?? []) {
        const batchId = execution.execution?.workflowId ?? '';
        const startTime = timestampToIso(execution.startTime) ?? '';
        const known = latest.get(batchId);
        if (known !== undefined && known.startTime >= startTime) continue;
        const memo = execution.memo?.fields ?? {};
        latest.set(batchId, {
          batchId,
          runId: execution.execution?.runId ?? '',
          status: temporal.api.enums.v1.WorkflowExecutionStatus[execution.status ?? 0].replace('WORKFLOW_EXECUTION_STATUS_', ''),
          startTime,
          closeTime: timestampToIso(execution.closeTime),
          modelAlias: plainMemoString(memo.modelAlias),
          manifest: plainMemoString(memo.manifest),
        });
      }
      nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (nextPageToken);
    return [...latest.values()].sort((a, b) => b.startTime.localeCompare(a.startTime));
  }

  /** Returns the manifest URI that a finished batch recorded in its memo, or null while it runs. */
  async manifestUri(batchId: string): Promise<string | null> {
    const description = await this.handle(batchId).describe();
    const manifest = description.memo?.manifest;
    return typeof manifest === 'string' ? manifest : null;
  }

  /** Returns true when a batch with this id exists on the server. */
  async exists(batchId: string): Promise<boolean> {
    try {
      await this.handle(batchId).describe();
      return true;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      throw err;
    }
  }
}

/**
 * Returns the innermost failure message of a failed batch, with its type, e.g.
 * `ModelNotFound: Model x not found ...`, instead of the SDK's "Activity task failed" wrappers.
 */
export function failureReason(err: unknown): string {
  let message = err instanceof Error ? err.message : String(err);
  let type: string | undefined;
  for (let current: unknown = err; current instanceof Error; current = current.cause) {
    type ??= (current as { type?: string }).type || undefined;
    if (current.message && !/^(Workflow execution failed|Activity task failed)$/.test(current.message)) message = current.message;
  }
  return type ? `${type}: ${message}` : message;
}

function timestampToIso(timestamp: { seconds?: unknown; nanos?: number | null } | null | undefined): string | null {
  if (!timestamp || timestamp.seconds === undefined || timestamp.seconds === null) return null;
  return new Date(Number(timestamp.seconds) * 1000 + Math.floor((timestamp.nanos ?? 0) / 1e6)).toISOString();
}

/** Decodes a memo field stored as plain JSON; returns null for an encrypted or non-string one. */
function plainMemoString(payload: temporal.api.common.v1.IPayload | undefined): string | null {
  if (!payload?.data || Buffer.from(payload.metadata?.encoding ?? '').toString() !== 'json/plain') return null;
  const value: unknown = JSON.parse(Buffer.from(payload.data).toString('utf8'));
  return typeof value === 'string' ? value : null;
}

/** Reads a batch manifest from a file or S3 URI; needs no Temporal server. */
export async function readManifest(uri: string, store: ObjectStore = createObjectStore()): Promise<BatchManifest> {
  return JSON.parse((await store.get(uri)).body.toString('utf8')) as BatchManifest;
}

/** Creates a sortable, readable batch id such as `b-20261204-201500-3f9a1c`. */
export function newBatchId(now: Date = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `b-${stamp}-${randomBytes(3).toString('hex')}`;
}
