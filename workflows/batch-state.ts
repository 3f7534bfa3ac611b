/**
 * What a batch carries between workflow runs (through continue-as-new), what the `progress`
 * query returns, and what the workflow returns. All of it is counts and references, so it stays
 * the same size however many images the batch has.
 */
import type { Listing, ModelVersion } from '../activities/types';
import type { ResolvedBatchInput } from './batch-input';

/** Failed shards kept by index in the state; past this many only the count grows. */
export const MAX_FAILED_SHARDS_LISTED = 100;

export interface FailedShard {
  index: number;
  error: string;
}

export interface BatchTotals {
  shardsDone: number;
  shardsFailed: number;
  /** Images whose shard has completed, ok or failed. */
  imagesDone: number;
  imagesFailed: number;
  costUsd: number;
  failedShards: FailedShard[];
}

export interface BatchState {
  input: ResolvedBatchInput;
  model: ModelVersion;
  listing: Listing;
  /** `<output root>/<batchId>`: everything the batch writes is under it. */
  outputUri: string;
  /** Index of the next shard to start; shards before it have finished. */
  nextShard: number;
  totals: BatchTotals;
  startedAt: string;
  /** Workflow runs so far, counting the current one. */
  runs: number;
}

export type BatchStatus = 'starting' | 'running' | 'writing-manifest' | 'completed' | 'completed-with-errors' | 'failed' | 'cancelled';

export interface BatchProgress {
  batchId: string;
  status: BatchStatus;
  model: string | null;
  shards: number;
  shardsDone: number;
  shardsFailed: number;
  shardsRunning: number;
  images: number;
  imagesDone: number;
  imagesFailed: number;
  costUsd: number;
  output: string | null;
  run: number;
}

export interface BatchSummary {
  batchId: string;
  workflowId: string;
  status: 'completed' | 'completed-with-errors';
  images: number;
  imagesFailed: number;
  shards: number;
  shardsFailed: number;
  failedShards: FailedShard[];
  model: { name: string; version: string; sha256: string };
  costUsd: number;
  output: string;
  manifest: string;
  startedAt: string;
  finishedAt: string;
  runs: number;
}

export function emptyTotals(): BatchTotals {
  return { shardsDone: 0, shardsFailed: 0, imagesDone: 0, imagesFailed: 0, costUsd: 0, failedShards: [] };
}
