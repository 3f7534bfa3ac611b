/**
 * The inference worker: runs shard activities on `skynewt-gpu-spot`. It loads its configured
 * models before polling, so the first shard does not pay the model load, and keeps one model
 * runner thread per process whose sessions every shard shares.
 */
import type { DataConverter } from '@temporalio/common';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { encryptingDataConverter } from '../activities/codec/aes-gcm-codec';
import { createInferenceActivities } from '../activities/inference-activities';
import { capacityFromEnv } from '../activities/capacity';
import { CostMeter } from '../activities/cost-meter';
import { SharedPriceFeed, type PriceFeed } from '../activities/pricing/price-feed';
import { createWorkerPrices } from '../activities/pricing/worker-prices';
import { Drain } from '../activities/drain';
import { createProcessTrace, type ProcessTrace } from '../activities/process-trace';
import { hostExecutionProviders, visibleGpuCount } from '../activities/inference/execution-providers';
import { ModelRunner } from '../activities/inference/model-runner';
import type { ModelRegistry } from '../activities/registry/model-registry';
import { openRegistry } from '../activities/registry/open-registry';
import { ensureModelLoaded } from '../activities/run-shard';
import type { ObjectStore } from '../activities/storage/object-store';
import { createObjectStore } from '../activities/storage/stores';
import type { Capacity } from '../activities/types';
import { GPU_SPOT_TASK_QUEUE } from '../workflows/names';
import { disableMetadataOffEc2 } from '../activities/local-home';
import { loadConfig } from './config';
import { temporalConnectionOptions } from './temporal-connection';
import { capacityFromMetadata } from './ec2-capacity';
import { InstanceMetadataClient } from './instance-metadata';
import { SpotWatcher } from './spot-watcher';
import { WORKER_READY_MARKER } from './ready';

export interface InferenceWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue?: string;
  store: ObjectStore;
  registry: ModelRegistry;
  runner: ModelRunner;
  capacity: Capacity;
  /** Host price the shards are charged with; by default the fixed `capacity.hourlyRateUsd`. */
  priceFeed?: PriceFeed;
  /** Shards run at once by this worker. */
  shardConcurrency: number;
  /** Model references loaded before the worker polls. */
  prewarmModels: string[];
  /** Drain switch shared with the shards; pass one to drain the worker later with `drainWorker`. */
  drain?: Drain;
  /** Per-image trace, for the chaos drill. */
  trace?: ProcessTrace;
  /** Images prepared ahead of inference per shard. */
  prefetchDepth?: number;
  /** Images per model call; the models must accept a dynamic batch dimension. */
  inferenceBatch?: number;
  /** Data converter, e.g. one that encrypts payloads and heartbeat details; the SDK's default when absent. */
  dataConverter?: DataConverter;
}

export async function createInferenceWorker(options: InferenceWorkerOptions): Promise<Worker> {
  for (const reference of options.prewarmModels) {
    const [name, version] = reference.split('@');
    const model = await options.registry.get(name, version);
    const loadMs = await ensureModelLoaded(options, model);
    Runtime.instance().logger.info('Model pre-warmed', { model: `${model.name}@${model.version}`, sha256: model.sha256, loadMs, executionProviders: options.runner.executionProvidersFor(model).join(',') });
  }
  const activities = createInferenceActivities({
    store: options.store,
    registry: options.registry,
    runner: options.runner,
    capacity: options.capacity,
    costMeter: new CostMeter(options.priceFeed ?? options.capacity.hourlyRateUsd),
    drain: options.drain ?? new Drain(),
    trace: options.trace,
    prefetchDepth: options.prefetchDepth,
    inferenceBatch: options.inferenceBatch,
  });
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: options.taskQueue ?? GPU_SPOT_TASK_QUEUE,
    activities,
    ...(options.dataConverter ? { dataConverter: options.dataConverter } : {}),
    maxConcurrentActivityTaskExecutions: options.shardConcurrency,
    // Checkpoints must reach the server promptly: a replacement attempt resumes from the last
    // heartbeat the server has, and the SDK would otherwise hold heartbeats for up to 24 s.
    maxHeartbeatThrottleInterval: '2 seconds',
    defaultHeartbeatThrottleInterval: '2 seconds',
    // After a rebalance recommendation the worker stops polling but lets running shards finish,
    // which may take as long as a shard's start-to-close timeout. A drain ends them in seconds.
    shutdownGraceTime: '2 hours',
  });
}

/**
 * Stops polling and hands every running shard back with its checkpoint. Used on a spot
 * termination notice and on SIGTERM or SIGINT; the worker's `run()` resolves once shards are out.
 */
export function drainWorker(worker: Worker, drain: Drain, reason: string): void {
  drain.trigger(reason);
  if (worker.getState() === 'RUNNING') worker.shutdown();
}

export async function runInferenceWorker(): Promise<void> {
  disableMetadataOffEc2();
  // The worker handles its own signals: SIGTERM drains, so shards hand back their checkpoints.
  Runtime.install({ shutdownSignals: [] });
  const logger = Runtime.instance().logger;
  const config = loadConfig();
  const metadata = config.ec2 ? new InstanceMetadataClient(config.imdsUrl) : null;
  const prices = await createWorkerPrices({
    capacity: metadata ? await capacityFromMetadata(metadata) : capacityFromEnv(),
    ec2: config.ec2,
    imdsUrl: config.imdsUrl,
    spotPriceRefreshMs: config.spotPriceRefreshMs,
    onDemandPricesFile: config.onDemandPricesFile,
    warn: (message, fields) => logger.warn(message, fields),
  });
  const devices = process.env.CUDA_VISIBLE_DEVICES;
  const capacity = visibleGpuCount() > 0 && devices ? { ...prices.capacity, gpus: devices } : prices.capacity;
  logger.info('Host price', { source: prices.source, instanceType: capacity.instanceType, zone: capacity.availabilityZone, hourlyRateUsd: capacity.hourlyRateUsd });
  const runner = await ModelRunner.start({
    intraOpThreads: config.intraOpThreads,
    executionProviders: config.executionProviders ?? undefined,
    hostExecutionProviders: hostExecutionProviders(),
  });
  const connection = await NativeConnection.connect(temporalConnectionOptions(config.address));
  const drain = new Drain();
  const worker = await createInferenceWorker({
    connection,
    namespace: config.namespace,
    taskQueue: config.inferenceTaskQueue,
    store: createObjectStore(),
    registry: openRegistry(),
    runner,
    capacity,
    priceFeed: config.workersOnHost > 1 ? new SharedPriceFeed(prices.feed, config.workersOnHost) : prices.feed,
    shardConcurrency: config.shardConcurrency,
    prewarmModels: config.prewarmModels,
    drain,
    trace: createProcessTrace(process.env.SKYNEWT_TRACE_FILE),
    prefetchDepth: config.prefetchDepth,
    inferenceBatch: config.inferenceBatch,
    dataConverter: config.payloadKeyring ? encryptingDataConverter(config.payloadKeyring) : undefined,
  });

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      logger.info('Draining on signal', { signal });
      drainWorker(worker, drain, `signal ${signal}`);
    });
  }
  const watcher = metadata ? watchSpotNotices(metadata, config.spotPollMs, worker, drain) : null;
  console.log(
    `${WORKER_READY_MARKER} inference pid=${process.pid} taskQueue=${config.inferenceTaskQueue} host=${capacity.host} lifecycle=${capacity.lifecycle} executionProviders=${runner.executionProviders.join(',')} executionProviderSource=${config.executionProviders ? 'worker' : 'host'} gpus=${visibleGpuCount()} cudaVisibleDevices=${process.env.CUDA_VISIBLE_DEVICES ?? 'unset'} intraOpThreads=${config.intraOpThreads} shardConcurrency=${config.shardConcurrency} prefetch=${config.prefetchDepth} inferenceBatch=${config.inferenceBatch} workersOnHost=${config.workersOnHost} models=${config.prewarmModels.join(',') || 'none'} spotWatcher=${watcher ? 'on' : 'off'} payloadEncryption=${config.payloadKeyring ? `keyId=${config.payloadKeyring.encryptionKeyId}` : 'off'}`,
  );
  try {
    await worker.run();
    logger.info('Inference worker stopped', { drained: drain.reason });
  } finally {
    watcher?.stop();
    prices.stop();
    await runner.close();
    await connection.close();
  }
}

/** Starts polling for spot notices: termination drains the worker, rebalance stops its polling. */
function watchSpotNotices(metadata: InstanceMetadataClient, intervalMs: number, worker: Worker, drain: Drain): SpotWatcher {
  const logger = Runtime.instance().logger;
  let failures = 0;
  const watcher = new SpotWatcher({
    metadata,
    intervalMs,
    onNotice(notice) {
      if (notice.kind === 'termination') {
        logger.warn('Spot termination notice; draining', { action: notice.action, time: notice.time });
        drainWorker(worker, drain, `spot ${notice.action} notice for ${notice.time}`);
      } else {
        logger.warn('Spot rebalance recommendation; no new shards', { noticeTime: notice.noticeTime });
        if (worker.getState() === 'RUNNING') worker.shutdown();
      }
    },
    onError(err) {
      // One line per 12 failures (a minute at the default period), so a broken service stays visible.
      if (failures++ % 12 === 0) logger.warn('Spot notice poll failed', { error: String(err), failures });
    },
  });
  watcher.start();
  return watcher;
}

if (require.main === module) {
  runInferenceWorker().catch((err) => {
    console.error('Inference worker failed:', err);
    process.exit(1);
  });
}
