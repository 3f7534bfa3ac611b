/**
 * Shared test fixtures: real workers in this process against the shared dev server, a local
 * registry with the real PaddleOCR models, sample images, and S3 clients pointed at moto.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { Client, Connection } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { DefaultLogger, NativeConnection, Runtime, Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import { ModelRunner } from '../activities/inference/model-runner';
import { createOrchestratorActivities } from '../activities/orchestrator-activities';
import { LocalRegistry } from '../activities/registry/local-registry';
import type { ModelRegistry } from '../activities/registry/model-registry';
import { createObjectStore } from '../activities/storage/stores';
import { toFileUri } from '../activities/storage/uri';
import type { Capacity, ModelVersion } from '../activities/types';
import { SkyNewtClient } from '../client/skynewt-client';
import { registerModel } from '../cli/model-commands';
import { DEMO_MODELS } from '../cli/demo';
import { createInferenceWorker } from '../workers/inference';
import { createOrchestratorWorker } from '../workers/orchestrator';

// Worker state changes and workflow logs at INFO would bury the test output.
try {
  Runtime.install({ logger: new DefaultLogger('WARN') });
} catch {
  // Already installed by an earlier import in this process.
}

export const TEST_CAPACITY: Capacity = {
  host: 'test-host',
  instanceType: 'local',
  availabilityZone: 'local',
  lifecycle: 'local',
  buildId: 'test',
  hourlyRateUsd: 0,
};

/** Creates an S3 client for moto with an explicit endpoint and static credentials. */
export function motoS3(): S3Client {
  return new S3Client({
    endpoint: inject('motoEndpoint'),
    region: 'us-east-1',
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    forcePathStyle: true,
  });
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(inject('scratchDir'), `${prefix}-`));
}

/** Copies the named sample images (or the first `count`) into a new folder and returns it. */
export function sampleFolder(names: string[] | number): string {
  const samples = inject('samplesDir');
  const all = readdirSync(samples).sort();
  const chosen = typeof names === 'number' ? all.slice(0, names) : names;
  const folder = tempDir('images');
  for (const name of chosen) copyFileSync(path.join(samples, name), path.join(folder, name));
  return folder;
}

export async function registerDetector(registry: ModelRegistry): Promise<ModelVersion> {
  const { detection } = DEMO_MODELS;
  return (await registerModel(registry, detection.name, detection.file, { ...detection.options, version: detection.version })).model;
}

export async function registerClassifier(registry: ModelRegistry, labelsFile: string): Promise<ModelVersion> {
  const { direction } = DEMO_MODELS;
  return (await registerModel(registry, direction.name, direction.file, { ...direction.options, version: direction.version, labels: labelsFile })).model;
}

export async function uploadFolder(s3: S3Client, folder: string, bucket: string, prefix: string): Promise<void> {
  await s3.send(new CreateBucketCommand({ Bucket: bucket })).catch((err: Error) => {
    if (err.name !== 'BucketAlreadyOwnedByYou' && err.name !== 'BucketAlreadyExists') throw err;
  });
  for (const name of readdirSync(folder)) {
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}/${name}`, Body: readFileSync(path.join(folder, name)) }));
  }
}

export interface TestStack {
  client: SkyNewtClient;
  registry: ModelRegistry;
  home: string;
  resultsRoot: string;
  taskQueue: string;
  gpuTaskQueue: string;
  runner: ModelRunner;
  stop(): Promise<void>;
}

/**
 * Runs an orchestrator worker and an inference worker in this process on fresh task queues,
 * with a local registry in a temporary folder.
 */
export async function startTestStack(
  options: {
    inference?: boolean;
    address?: string;
    s3?: S3Client;
    orchestrator?: boolean;
    /** Data converter for both workers and the client, e.g. one that encrypts payloads. */
    dataConverter?: DataConverter;
    /** Images per model call in the inference worker. */
    inferenceBatch?: number;
  } = {},
): Promise<TestStack> {
  const home = tempDir('home');
  mkdirSync(path.join(home, 'results'), { recursive: true });
  const resultsRoot = toFileUri(path.join(home, 'results'));
  const registry = new LocalRegistry(path.join(home, 'registry'));
  const store = createObjectStore({ s3: options.s3 ?? motoS3() });
  const suffix = randomUUID().slice(0, 8);
  const taskQueue = `test-orchestrator-${suffix}`;
  const gpuTaskQueue = `test-gpu-${suffix}`;

  const address = options.address ?? inject('temporalAddress');
  const nativeConnection = await NativeConnection.connect({ address });
  const connection = await Connection.connect({ address });
  const workers: Worker[] = [];
  if (options.orchestrator !== false) {
    workers.push(await createOrchestratorWorker({
      connection: nativeConnection,
      namespace: 'default',
      taskQueue,
      activities: createOrchestratorActivities({ store, registry, resultsRoot, temporal: new Client({ connection, dataConverter: options.dataConverter }) }),
      workflowBundle: { codePath: inject('workflowBundlePath') },
      dataConverter: options.dataConverter,
    }));
  }
  const runner = await ModelRunner.start({ intraOpThreads: os.availableParallelism() });
  if (options.inference !== false) {
    workers.push(await createInferenceWorker({
      connection: nativeConnection,
      namespace: 'default',
      taskQueue: gpuTaskQueue,
      store,
      registry,
      runner,
      capacity: TEST_CAPACITY,
      shardConcurrency: 1,
      inferenceBatch: options.inferenceBatch,
      prewarmModels: [],
      dataConverter: options.dataConverter,
    }));
  }
  const running = workers.map((worker) => worker.run());

  const client = new SkyNewtClient({ client: new Client({ connection, dataConverter: options.dataConverter }), store, taskQueue });
  return {
    client,
    registry,
    home,
    resultsRoot,
    taskQueue,
    gpuTaskQueue,
    runner,
    async stop() {
      for (const worker of workers) worker.shutdown();
      await Promise.all(running);
      await runner.close();
      await connection.close();
      await nativeConnection.close();
    },
  };
}
