/**
 * The inference worker: runs shard activities on `skynewt-gpu-spot`. It loads its configured
 * models before polling, so the first shard does not pay the model load, and keeps one model
 * runner thread per process whose sessions every shard shares.
 */
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { createInferenceActivities } from '../activities/inference-activities';
import { capacityFromEnv } from '../activities/capacity';
import { CostMeter } from '../activities/cost-meter';
import { ModelRunner } from '../activities/inference/model-runner';
import type { ModelRegistry } from '../activities/registry/model-registry';
import { openRegistry } from '../activities/registry/open-registry';
import { ensureModelLoaded } from '../activities/run-shard';
import type { ObjectStore } from '../activities/storage/object-store';
import { createObjectStore } from '../activities/storage/stores';
import type { Capacity } from '../activities/types';
import { GPU_SPOT_TASK_QUEUE } from '../workflows/names';
import { loadConfig } from './config';
import { WORKER_READY_MARKER } from './ready';

export interface InferenceWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue?: string;
  store: ObjectStore;
  registry: ModelRegistry;
  runner: ModelRunner;
  capacity: Capacity;
  /** Shards run at once by this worker. */
  shardConcurrency: number;
  /** Model references loaded before the worker polls. */
  prewarmModels: string[];
}

export async function createInferenceWorker(options: InferenceWorkerOptions): Promise<Worker> {
  for (const reference of options.prewarmModels) {
    const [name, version] = reference.split('@');
    const model = await options.registry.get(name, version);
    const loadMs = await ensureModelLoaded(options, model);
    Runtime.instance().logger.info('Model pre-warmed', { model: `${model.name}@${model.version}`, sha256: model.sha256, loadMs });
  }
  const activities = createInferenceActivities({
    store: options.store,
    registry: options.registry,
    runner: options.runner,
    capacity: options.capacity,
    costMeter: new CostMeter(options.capacity.hourlyRateUsd),
  });
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue ?? GPU_SPOT_TASK_QUEUE,
    activities,
    maxConcurrentActivityTaskExecutions: options.shardConcurrency,
    // Checkpoints must reach the server promptly: a replacement attempt resumes from the last
    // heartbeat the server has, and the SDK would otherwise hold heartbeats for up to 24 s.
    maxHeartbeatThrottleInterval: '2 seconds',
    defaultHeartbeatThrottleInterval: '2 seconds',
  });
}

export async function runInferenceWorker(): Promise<void> {
  const config = loadConfig();
  const capacity = capacityFromEnv();
  const runner = await ModelRunner.start({ intraOpThreads: config.intraOpThreads });
  const connection = await NativeConnection.connect({ address: config.address });
  const worker = await createInferenceWorker({
    connection,
    namespace: config.namespace,
    taskQueue: config.inferenceTaskQueue,
    store: createObjectStore(),
    registry: openRegistry(),
    runner,
    capacity,
    shardConcurrency: config.shardConcurrency,
    prewarmModels: config.prewarmModels,
  });
  console.log(
    `${WORKER_READY_MARKER} inference taskQueue=${config.inferenceTaskQueue} host=${capacity.host} lifecycle=${capacity.lifecycle} models=${config.prewarmModels.join(',') || 'none'}`,
  );
  try {
    await worker.run();
  } finally {
    await runner.close();
    await connection.close();
  }
}

if (require.main === module) {
  runInferenceWorker().catch((err) => {
    console.error('Inference worker failed:', err);
    process.exit(1);
  });
}
