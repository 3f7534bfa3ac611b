/** Public entry point of the `skynewt` package for upstream services. */
export { SkyNewtClient, newBatchId, readManifest, type LiveProgress, type SkyNewtClientOptions } from './skynewt-client';
export type { BatchInput } from '../workflows/batch-input';
export type { BatchProgress, BatchSummary, FailedShard } from '../workflows/batch-state';
export type { BatchManifest, ManifestShard } from '../activities/write-manifest';
export type { ModelVersion, OutputRecord, ShardResult, Capacity } from '../activities/types';
export { BATCH_WORKFLOW_TYPE, ORCHESTRATOR_TASK_QUEUE, GPU_SPOT_TASK_QUEUE } from '../workflows/names';
