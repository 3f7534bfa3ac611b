/**
 * The software lineage of a shard's results, beside the model and capacity: which inference
 * runtime and execution providers ran the model, which preprocessing, and which SkyNewt build.
 */
import { createHash } from 'node:crypto';
import { ortVersion } from './inference/model-runner';
import type { Capacity, ModelVersion } from './types';

import packageJson from '../package.json';

export interface ShardLineage {
  onnxruntimeVersion: string;
  executionProviders: string[];
  /** sha256 of the preprocessing spec, threshold and labels as canonical JSON. */
  preprocessSha256: string;
  skynewtVersion: string;
  /** Git commit or configured build id of the worker. */
  buildId: string;
}

export function preprocessSha256(model: ModelVersion): string {
  const { width, height, mean, std } = model.preprocess;
  const canonical = JSON.stringify({ width, height, mean, std, threshold: model.threshold, labels: model.labels, task: model.task });
  return createHash('sha256').update(canonical).digest('hex');
}

export function shardLineage(model: ModelVersion, executionProviders: string[], capacity: Capacity): ShardLineage {
  return {
    onnxruntimeVersion: ortVersion(),
    executionProviders,
    preprocessSha256: preprocessSha256(model),
    skynewtVersion: packageJson.version,
    buildId: capacity.buildId,
  };
}
