/**
 * Activities of the inference worker (task queue `skynewt-gpu-spot`). The worker builds them
 * once per process, so the model runner and its cached sessions are shared by every shard.
 */
import { createRunShard, type ShardDeps } from './run-shard';

export function createInferenceActivities(deps: ShardDeps) {
  return {
    runShard: createRunShard(deps),
  };
}

export type InferenceActivities = ReturnType<typeof createInferenceActivities>;
