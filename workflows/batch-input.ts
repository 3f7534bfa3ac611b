/**
 * The `batchInference` input: one JSON object, so a batch can be started from the `temporal` CLI
 * as easily as from code. Validation runs inside the workflow, so it must stay deterministic.
 */
import { ApplicationFailure } from '@temporalio/workflow';
import { GPU_ONDEMAND_TASK_QUEUE, GPU_SPOT_TASK_QUEUE } from './names';

export interface BatchInput {
  /** Images: `s3://bucket/prefix`, `file:///abs/dir`, an absolute folder path, or a manifest file with one image URI per line. */
  input: string;
  /** Registered model as `name` (latest version) or `name@version`. */
  model: string;
  /** Output root; the batch writes under `<output>/<batchId>/`. Defaults to the worker's results folder. */
  output?: string;
  /** Batch id; defaults to the workflow id. Letters, digits, `.`, `_` and `-`, at most 100. */
  batchId?: string;
  /** Images per shard activity. @default 200, accepted 1–5000. */
  shardSize?: number;
  /** Images between checkpoint heartbeats. @default 25, accepted 1–shardSize. */
  checkpointEvery?: number;
  /** Shard activities in flight at once. @default 16, accepted 1–500. */
  maxConcurrentShards?: number;
  /** Largest image accepted, in pixels; bigger ones are recorded as failed. @default 100,000,000. */
  maxPixels?: number;
  /** Labels kept per image for classification models. @default 5, accepted 1–100. */
  topK?: number;
  /** Task queue of the inference workers that run the shards. @default `skynewt-gpu-spot`. */
  taskQueue?: string;
  /** Task queue a shard moves to after `preemptionsBeforeOnDemand` capacity losses. @default `skynewt-gpu-ondemand`. */
  onDemandTaskQueue?: string;
  /** Retries of a shard after real errors (not capacity loss). @default 3, accepted 0–10. */
  maxErrorRetries?: number;
  /** Capacity losses of one shard before it moves to the on-demand queue; 0 keeps it on spot. @default 3, accepted 0–50. */
  preemptionsBeforeOnDemand?: number;
  /**
   * Runs listing, shards, checkpoints and outputs without reading images or running the model;
   * every output line has status `skipped`. For measuring orchestration at scale. @default false
   */
  dryRun?: boolean;
}

export type ResolvedBatchInput = Required<Omit<BatchInput, 'output' | 'batchId'>> & {
  output?: string;
  batchId: string;
};

export const BATCH_DEFAULTS = {
  shardSize: 200,
  checkpointEvery: 25,
  maxConcurrentShards: 16,
  maxPixels: 100_000_000,
  topK: 5,
  maxErrorRetries: 3,
  preemptionsBeforeOnDemand: 3,
} as const;

const URI_FORMS = 's3://bucket/prefix, file:///abs/path, an absolute path, or a manifest file';
const MODEL_PATTERN = /^[a-z0-9][a-z0-9._-]{0,63}(@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$/;
const BATCH_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
const KNOWN_FIELDS = new Set([
  'input', 'model', 'output', 'batchId', 'shardSize', 'checkpointEvery', 'maxConcurrentShards', 'maxPixels', 'topK', 'taskQueue',
  'onDemandTaskQueue', 'maxErrorRetries', 'preemptionsBeforeOnDemand', 'dryRun',
]);
const TASK_QUEUE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/;

function invalid(message: string): never {
  throw ApplicationFailure.nonRetryable(message, 'InvalidBatchInput');
}

/** S3 bucket naming rules: 3–63 lowercase letters, digits, dots and hyphens, no `..`, not an IP address. */
function isBucketName(name: string): boolean {
  return /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name) && !name.includes('..') && !/^\d+\.\d+\.\d+\.\d+$/.test(name);
}

function checkUri(field: string, value: unknown): string {
  if (value === undefined || value === null || value === '') {
    invalid(`Invalid batch input: "${field}" is required: ${URI_FORMS}.`);
  }
  if (typeof value !== 'string' || value.trim() === '') {
    invalid(`Invalid batch input: "${field}" is ${JSON.stringify(value)}; expected a string: ${URI_FORMS}.`);
  }
  const uri = value.trim();
  const bucket = /^s3:\/\/([^/]*)/.exec(uri)?.[1];
  const isS3 = bucket !== undefined && isBucketName(bucket);
  if (bucket !== undefined && !isS3) {
    invalid(`Invalid batch input: "${field}" ${JSON.stringify(value)} names the invalid bucket ${JSON.stringify(bucket)}; bucket names are 3–63 lowercase letters, digits, "." and "-".`);
  }
  const isFile = uri.startsWith('file:///') || uri.startsWith('/');
  if (!isS3 && !isFile) {
    invalid(`Invalid batch input: "${field}" is ${JSON.stringify(value)}; accepted values are ${URI_FORMS}.`);
  }
  return uri;
}

function checkInteger(field: string, value: unknown, min: number, max: number, fallback: number): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    invalid(`Invalid batch input: "${field}" is ${JSON.stringify(value)}; accepted values are integers from ${min} to ${max} (default ${fallback}).`);
  }
  return value;
}

function checkBoolean(field: string, value: unknown): boolean {
  if (value === undefined || value === null) return false;
  if (typeof value !== 'boolean') invalid(`Invalid batch input: "${field}" is ${JSON.stringify(value)}; expected true or false.`);
  return value;
}

function checkTaskQueue(field: string, value: unknown, fallback: string): string {
  const name = value ?? fallback;
  if (typeof name !== 'string' || !TASK_QUEUE_PATTERN.test(name)) {
    invalid(`Invalid batch input: "${field}" is ${JSON.stringify(value)}; expected the name of an inference workers' task queue such as "${fallback}".`);
  }
  return name;
}

/**
 * Validates the raw workflow argument and fills in defaults. Throws a non-retryable
 * `InvalidBatchInput` failure naming the field and the accepted values.
 */
export function validateBatchInput(raw: unknown, workflowId: string): ResolvedBatchInput {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    invalid(`Invalid batch input: expected one JSON object such as {"input":"s3://bucket/images","model":"name@version"}, got ${JSON.stringify(raw)}.`);
  }
  const fields = raw as Record<string, unknown>;
  const unknown = Object.keys(fields).filter((key) => !KNOWN_FIELDS.has(key));
  if (unknown.length > 0) {
    invalid(`Invalid batch input: unknown field "${unknown[0]}"; accepted fields are ${[...KNOWN_FIELDS].join(', ')}.`);
  }

  const input = checkUri('input', fields.input);
  if (fields.model === undefined || fields.model === null) {
    invalid('Invalid batch input: "model" is required; give "name" or "name@version" of a registered model (see skynewt model list).');
  }
  if (typeof fields.model !== 'string' || !MODEL_PATTERN.test(fields.model)) {
    invalid(`Invalid batch input: "model" is ${JSON.stringify(fields.model)}; expected "name" or "name@version" of a registered model (see skynewt model list).`);
  }
  const output = fields.output === undefined || fields.output === null ? undefined : checkUri('output', fields.output);

  const batchId = fields.batchId ?? workflowId;
  if (typeof batchId !== 'string' || !BATCH_ID_PATTERN.test(batchId)) {
    invalid(`Invalid batch input: "batchId" is ${JSON.stringify(batchId)}; accepted values are 1–100 letters, digits, ".", "_" or "-", starting with a letter or digit.`);
  }

  const taskQueue = checkTaskQueue('taskQueue', fields.taskQueue, GPU_SPOT_TASK_QUEUE);
  const onDemandTaskQueue = checkTaskQueue('onDemandTaskQueue', fields.onDemandTaskQueue, GPU_ONDEMAND_TASK_QUEUE);

  const shardSize = checkInteger('shardSize', fields.shardSize, 1, 5000, BATCH_DEFAULTS.shardSize);
  const checkpointEvery = checkInteger(
    'checkpointEvery', fields.checkpointEvery, 1, shardSize, Math.min(BATCH_DEFAULTS.checkpointEvery, shardSize),
  );
  return {
    input,
    model: fields.model,
    output,
    batchId,
    shardSize,
    checkpointEvery,
    maxConcurrentShards: checkInteger('maxConcurrentShards', fields.maxConcurrentShards, 1, 500, BATCH_DEFAULTS.maxConcurrentShards),
    maxPixels: checkInteger('maxPixels', fields.maxPixels, 1, 1_000_000_000, BATCH_DEFAULTS.maxPixels),
    topK: checkInteger('topK', fields.topK, 1, 100, BATCH_DEFAULTS.topK),
    taskQueue,
    onDemandTaskQueue,
    maxErrorRetries: checkInteger('maxErrorRetries', fields.maxErrorRetries, 0, 10, BATCH_DEFAULTS.maxErrorRetries),
    preemptionsBeforeOnDemand: checkInteger('preemptionsBeforeOnDemand', fields.preemptionsBeforeOnDemand, 0, 50, BATCH_DEFAULTS.preemptionsBeforeOnDemand),
    dryRun: checkBoolean('dryRun', fields.dryRun),
  };
}
