/**
 * Types of the state a batch carries between workflow runs (through continue-as-new), of the
 * `progress` query result and of the workflow result. All of it is counts and references, so it
 * stays the same size however many images the batch has.
 */
import type { Listing, ModelVersion, StageTimings } from '../activities/types';
import type { ResolvedBatchInput } from './batch-input';

/** Failed shards kept by index in the state; past this many only the count grows. */
export const MAX_FAILED_SHARDS_LISTED = 100;

export interface FailedShard {
  index: number;
  error: string;
}

/** Stage times summed over completed shards, in milliseconds. */
export type StageTotals = Omit<StageTimings, 'inferenceBusyFraction'>;

export interface BatchTotals {
  /** Stage times of completed shards; absent in state carried over from older runs. */
  stages?: StageTotals;
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
  /** Time completed shards spent per stage, and the stage that limits throughput. */
  utilisation: Utilisation | null;
}

export interface Utilisation {
  stages: StageTotals;
  /** inferenceMs ÷ wallMs over completed shards: how busy the model threads were, 0..1. */
  inferenceBusyFraction: number;
  /**
   * The stage with the most time. Download, decode, postprocess and upload overlap inference,
   * so `inference` as the bottleneck means the accelerator is the limit, which is the goal.
   */
  bottleneck: 'download' | 'decode' | 'inference' | 'postprocess' | 'upload' | null;
}

export function utilisation(stages: StageTotals | undefined): Utilisation | null {
  if (stages === undefined || stages.wallMs === 0) return null;
  const candidates = [
    ['download', stages.downloadMs],
    ['decode', stages.decodeMs],
    ['inference', stages.inferenceMs],
    ['postprocess', stages.postprocessMs],
    ['upload', stages.uploadMs],
  ] as const;
  const [bottleneck] = candidates.reduce((best, candidate) => (candidate[1] > best[1] ? candidate : best));
  return { stages, inferenceBusyFraction: Math.round((stages.inferenceMs / stages.wallMs) * 1000) / 1000, bottleneck };
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
