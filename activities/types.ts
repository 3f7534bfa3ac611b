/**
 * Types shared by the workflow, the activities, the workers and the client. Everything here
 * crosses Temporal's payload boundary, so it holds only references, counts and hashes.
 */

import type { ShardLineage } from './lineage';

export type ModelTask = 'segmentation' | 'classification';

/** Preprocessing that turns an image into the model's input tensor (NCHW, float32). */
export interface PreprocessSpec {
  /** Model input width and height in pixels; every image is resized to exactly this size. */
  width: number;
  height: number;
  /** Per-channel mean and standard deviation, in RGB order, applied after scaling to 0..1. */
  mean: [number, number, number];
  std: [number, number, number];
}

/** One immutable model version as stored in the registry. */
export interface ModelVersion {
  name: string;
  version: string;
  task: ModelTask;
  /** Lowercase hex sha256 of the ONNX file's bytes. */
  sha256: string;
  sizeBytes: number;
  /** Location of the ONNX bytes: `file:///abs/model.onnx` or `s3://bucket/key`. */
  artifactUri: string;
  preprocess: PreprocessSpec;
  /** Class labels for classification, in output order; empty for segmentation. */
  labels: string[];
  /** Probability threshold for segmentation masks, 0..1. */
  threshold: number;
  /**
   * onnxruntime execution providers to run this model with, in order of preference, e.g.
   * `['cuda', 'cpu']`. A worker started with its own list ignores it; absent means the host's.
   */
  executionProviders?: string[];
  createdAt: string;
  createdBy: string;
}

/** Lineage of the capacity that ran a shard attempt. */
export interface Capacity {
  /** EC2 instance id where known, otherwise the host name. */
  host: string;
  instanceType: string;
  availabilityZone: string;
  lifecycle: 'spot' | 'on-demand' | 'local';
  buildId: string;
  /** Hourly price of the host in USD used for the cost figure. */
  hourlyRateUsd: number;
  /**
   * GPU ids the worker used (its CUDA_VISIBLE_DEVICES) on a host with NVIDIA GPUs, so results of
   * several workers on one host name their GPU; absent elsewhere.
   */
  gpus?: string;
}

/** A region found in a segmentation probability map, in original image pixels. */
export interface Region {
  /** Bounding box: left, top, width, height. */
  box: [number, number, number, number];
  /** Number of pixels above the threshold, in original image pixels (scaled from the map). */
  area: number;
  meanScore: number;
}

export interface LabelScore {
  label: string;
  score: number;
}

/** One line of a shard's JSONL output. */
export interface OutputRecord {
  /** Position of the input in the batch listing, 0-based. */
  index: number;
  input: string;
  /** S3 ETag of the input object, or `sha256:<hex>` of its bytes for files. */
  inputEtag: string | null;
  /** S3 version id of the input object, where the bucket is versioned. */
  inputVersionId?: string;
  /** `skipped` only in a dry run, which reads no image. */
  status: 'ok' | 'failed' | 'skipped';
  error?: string;
  width?: number;
  height?: number;
  regions?: Region[];
  labels?: LabelScore[];
  mask?: string;
  modelSha256: string;
}

/** Checkpoint stored in heartbeat details; a retried attempt resumes from it. */
export interface ShardCheckpoint {
  /** Offset within the shard of the next image to process. */
  cursor: number;
  /** Parts already written, in order, covering offsets 0..cursor of the shard. */
  parts: ShardPart[];
  /** Wall seconds and cost of earlier attempts, so the final result covers all of them. */
  priorSeconds: number;
  priorCostUsd: number;
  /** Attempt number that wrote this checkpoint. */
  attempt: number;
  /** Capacity of the attempt that wrote this checkpoint, so a lost host is still identified. */
  capacity: Capacity;
}

/** Ending of one attempt at a shard. */
export type AttemptOutcome = 'completed' | 'interrupted' | 'host-lost' | 'failed';

/** One attempt at a shard, as the workflow records it and the manifest lists it. */
export interface ShardAttempt {
  /** 1-based, counted across every kind of ending. */
  attempt: number;
  taskQueue: string;
  /** Null when the host was lost before its first checkpoint reached the server. */
  capacity: Capacity | null;
  outcome: AttemptOutcome;
  /** Shard offsets the attempt started at and had checkpointed when it ended. */
  startCursor: number;
  endCursor: number;
  error?: string;
  /** Cost charged up to the attempt's last checkpoint, in USD. */
  costUsd: number;
  /**
   * Cost of the host while it idled just before this attempt, in USD; recorded for completed
   * attempts, absent for attempts that ended otherwise.
   */
  idleCostUsd?: number;
}

/** A checkpointed run of output lines; its object key follows from the shard and `start`. */
export interface ShardPart {
  start: number;
  end: number;
  ok: number;
  failed: number;
}

export interface ShardInput {
  batchId: string;
  shardIndex: number;
  /** Object listing the shard's input URIs, one per line. */
  listingUri: string;
  /** Offset of the shard's first image in the batch listing. */
  firstIndex: number;
  images: number;
  model: ModelVersion;
  /** Batch output root, e.g. `s3://bucket/results/batch-1`. */
  outputUri: string;
  checkpointEvery: number;
  maxPixels: number;
  topK: number;
  /** Attempt number across the shard, set by the workflow (Temporal's own retries are off). */
  attempt: number;
  /** Checkpoint to resume from, taken from the previous attempt's last heartbeat. */
  resume?: ShardCheckpoint;
  /** Earlier attempts, repeated in the result so the manifest can list them. */
  previousAttempts: ShardAttempt[];
  /** Writes a `skipped` line per image without reading it or running the model. */
  dryRun?: boolean;
}

/**
 * Time spent per stage in one attempt, in milliseconds. Downloads and decodes overlap inference,
 * so the stages can add up to more than `wallMs`.
 */
export interface StageTimings {
  downloadMs: number;
  decodeMs: number;
  inferenceMs: number;
  postprocessMs: number;
  uploadMs: number;
  /** Wall time of the attempt's image loop. */
  wallMs: number;
  /** inferenceMs ÷ wallMs: how busy the model thread was, 0..1. */
  inferenceBusyFraction: number;
}

export interface ShardResult {
  shardIndex: number;
  output: string;
  outputSha256: string;
  images: number;
  ok: number;
  failed: number;
  /** Offset the final attempt started from (0 unless it resumed from a checkpoint). */
  resumedFrom: number;
  attempt: number;
  model: { name: string; version: string; sha256: string };
  capacity: Capacity;
  timings: StageTimings;
  wallSeconds: number;
  costUsd: number;
  /** Every attempt at this shard, the last one being the attempt that completed it. */
  attempts: ShardAttempt[];
  /** Runtime, preprocessing and build that produced every record of the shard. */
  lineage: ShardLineage;
}

export interface Listing {
  /** Prefix holding `shard-NNNNN.txt` listing objects. */
  uri: string;
  images: number;
  shards: number;
  /** sha256 over all input URIs in order, one per line. */
  sha256: string;
}
