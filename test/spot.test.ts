import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { LocalRegistry } from '../activities/registry/local-registry';
import type { ModelVersion, OutputRecord } from '../activities/types';
import { registerModel } from '../cli/model-commands';
import { DEMO_MODELS } from '../cli/demo';
import { startFakeImds, type FakeImds } from '../infra/local/fake-imds';
import { registerDetector, startTestStack, tempDir, type TestStack } from './helpers';
import { killIfRunning, spawnInferenceWorker, waitForCursor, type WorkerProcess } from './worker-process';

/** Copies sample images into a new folder under distinct names. */
function imageFolder(count: number): string {
  const samples = inject('samplesDir');
  const names = readdirSync(samples).sort();
  const folder = tempDir('spot');
  for (let i = 0; i < count; i++) {
    const name = names[i % names.length];
    copyFileSync(path.join(samples, name), path.join(folder, `img-${String(i).padStart(3, '0')}${path.extname(name)}`));
  }
  return folder;
}

function readRecords(uri: string): OutputRecord[] {
  return readFileSync(fileURLToPath(uri), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
}

describe('spot interruptions', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  let imds: FakeImds;
  let workers: WorkerProcess[] = [];

  beforeAll(async () => {
    stack = await startTestStack({ inference: false });
    detector = await registerDetector(stack.registry);
  });
  afterEach(async () => {
    for (const worker of workers) killIfRunning(worker);
    workers = [];
    await imds?.close();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  async function spotWorker(name: string, env: Record<string, string> = {}): Promise<WorkerProcess> {
    const ec2 = env.SKYNEWT_EC2 !== 'false';
    // On EC2 the instance id comes from the metadata service, which an explicit id would override.
    const worker = await spawnInferenceWorker(stack, ec2 ? '' : name, { SKYNEWT_EC2: 'true', SKYNEWT_IMDS_URL: imds.url, SKYNEWT_SPOT_POLL_MS: '200', ...env });
    workers.push(worker);
    return worker;
  }

  it('drains on a termination notice and resumes at once', async () => {
    imds = await startFakeImds();
    const onDemandQueue = `${stack.gpuTaskQueue}-ondemand`;
    const spot = await spotWorker('from-metadata');
    const { batchId } = await stack.client.startBatch({
      input: imageFolder(20),
      model: `${detector.name}@${detector.version}`,
      shardSize: 20,
      checkpointEvery: 3,
      maxErrorRetries: 0,
      preemptionsBeforeOnDemand: 1,
      onDemandTaskQueue: onDemandQueue,
      taskQueue: stack.gpuTaskQueue,
    });
    await waitForCursor(stack, batchId, 3);
    await spotWorker('on-demand-host', { SKYNEWT_EC2: 'false', SKYNEWT_TASK_QUEUE: onDemandQueue });

    const noticeAt = Date.now();
    imds.issueTermination();
    expect(await spot.exited).toBe(0);
    const exitSeconds = (Date.now() - noticeAt) / 1000;
    expect(exitSeconds).toBeLessThan(30);
    expect(spot.output()).toContain('Spot termination notice; draining');
    expect(imds.requests).toContain('PUT /latest/api/token');
    expect(imds.requests).toContain('GET /latest/meta-data/spot/instance-action');

    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    const manifest = await stack.client.manifest(batchId);
    const [interrupted, completed] = manifest.shards[0].attempts;
    expect(manifest.shards[0].attempts).toHaveLength(2);
    expect(interrupted.outcome).toBe('interrupted');
    expect(interrupted.capacity).toMatchObject({ host: 'i-0123456789abcdef0', instanceType: 'g5.xlarge', availabilityZone: 'us-east-1a', lifecycle: 'spot' });
    expect(interrupted.endCursor).toBeGreaterThanOrEqual(3);
    expect(completed.outcome).toBe('completed');
    expect(completed.taskQueue).toBe(onDemandQueue);
    expect(completed.capacity?.host).toBe('on-demand-host');
    // Every image the interrupted attempt processed was checkpointed, so none is redone.
    expect(completed.startCursor).toBe(interrupted.endCursor);

    const history = await stack.client.handle(batchId).fetchHistory();
    const events = history.events ?? [];
    const failedAt = events.find((event) => event.activityTaskFailedEventAttributes)?.eventTime;
    const resumedAt = events.filter((event) => event.activityTaskStartedEventAttributes)[1]?.eventTime;
    const resumeSeconds = Number(resumedAt!.seconds) - Number(failedAt!.seconds);
    expect(resumeSeconds).toBeLessThan(10);
    expect(events.some((event) => event.activityTaskTimedOutEventAttributes)).toBe(false);

    const records = readRecords(manifest.shards[0].output);
    expect(records.map((record) => record.index)).toEqual(Array.from({ length: 20 }, (_, i) => i));
  });

  it('finishes running shards after a rebalance recommendation', async () => {
    imds = await startFakeImds({ 'instance-id': 'i-rebalanced' });
    const spot = await spotWorker('from-metadata');
    const { batchId } = await stack.client.startBatch({
      input: imageFolder(40),
      model: detector.name,
      shardSize: 20,
      checkpointEvery: 2,
      maxConcurrentShards: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    await waitForCursor(stack, batchId, 2);
    imds.issueRebalance();
    expect(await spot.exited).toBe(0);
    expect(spot.output()).toContain('Spot rebalance recommendation; no new shards');

    await spotWorker('replacement', { SKYNEWT_EC2: 'false' });
    const manifest = await stack.client.manifest(batchId);
    const hosts = manifest.shards.map((shard) => shard.attempts.map((attempt) => `${attempt.capacity?.host}:${attempt.outcome}`));
    // The rebalanced worker finished the shard it had and took no other; either shard may be first.
    expect(hosts.map((attempts) => attempts.join(',')).sort()).toEqual(['i-rebalanced:completed', 'replacement:completed']);
  });

  it('hands shards back on SIGTERM', async () => {
    imds = await startFakeImds();
    const first = await spotWorker('first', { SKYNEWT_EC2: 'false' });
    const { batchId } = await stack.client.startBatch({ input: imageFolder(12), model: detector.name, shardSize: 12, checkpointEvery: 2, taskQueue: stack.gpuTaskQueue });
    await waitForCursor(stack, batchId, 2);
    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);

    await spotWorker('second', { SKYNEWT_EC2: 'false' });
    const manifest = await stack.client.manifest(batchId);
    const attempts = manifest.shards[0].attempts;
    expect(attempts.map((attempt) => attempt.outcome)).toEqual(['interrupted', 'completed']);
    expect(attempts[0].error).toContain('signal SIGTERM');
    expect(attempts[1].startCursor).toBe(attempts[0].endCursor);
  });

  it('fails a crashing shard after its error budget', async () => {
    // PP-OCRv4 detection needs sides divisible by 32; at 100x100 every inference call fails.
    const registry = new LocalRegistry(path.join(stack.home, 'registry'));
    const { model } = await registerModel(registry, 'broken-detector', DEMO_MODELS.detection.file, { task: 'segmentation', inputSize: '100x100', version: '1' });
    await spotWorker('worker', { SKYNEWT_EC2: 'false' });
    const { batchId } = await stack.client.startBatch({
      input: imageFolder(3),
      model: `${model.name}@${model.version}`,
      shardSize: 2,
      maxErrorRetries: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);

    expect(summary.status).toBe('completed-with-errors');
    expect(summary.shardsFailed).toBe(2);
    expect(summary.imagesFailed).toBe(3);
    expect(summary.failedShards.map((shard) => shard.index).sort()).toEqual([0, 1]);
    const manifest = await stack.client.manifest(batchId);
    expect(manifest.shards).toHaveLength(0);
    for (const failed of manifest.failedShards) {
      expect(failed.attempts.map((attempt) => attempt.outcome)).toEqual(['failed', 'failed', 'failed']);
      expect(failed.error).toContain('BroadcastIterator');
    }
  });
});
