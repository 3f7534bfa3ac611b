import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CreateBucketCommand, GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { afterEach, describe, expect, inject, it } from 'vitest';
import type { OutputRecord } from '../activities/types';
import { startDevServer, type DevServer } from '../infra/local/dev-server';
import { findFreePort } from '../infra/local/ports';
import { startFaultProxy, type FaultProxy } from './fault-proxy';
import { motoS3, registerDetector, sampleFolder, startTestStack, tempDir, uploadFolder, type TestStack } from './helpers';
import { killIfRunning, spawnOrchestratorWorker, type WorkerProcess } from './worker-process';

function expectEveryInputOnce(records: OutputRecord[], images: number): void {
  expect(records.map((record) => record.index).sort((a, b) => a - b)).toEqual(Array.from({ length: images }, (_, i) => i));
  expect(new Set(records.map((record) => record.input)).size).toBe(images);
}

describe('fault tolerance', () => {
  let stack: TestStack | undefined;
  let proxy: FaultProxy | undefined;
  let server: DevServer | undefined;
  let orchestrator: WorkerProcess | undefined;

  afterEach(async () => {
    killIfRunning(orchestrator);
    await stack?.stop();
    await proxy?.close();
    await server?.stop();
    stack = proxy = server = orchestrator = undefined;
  });

  it('survives S3 errors, resets and stalls', async () => {
    const images = ['text.png', 'page.png', 'coins.png', 'camera.png', 'moon.png', 'horse.png'];
    await uploadFolder(motoS3(), sampleFolder(images), 'faulty-in', 'images');
    await motoS3().send(new CreateBucketCommand({ Bucket: 'faulty-out' }));
    // Roughly one request in five fails; two stall past the client's 1.5 s socket timeout.
    proxy = await startFaultProxy(inject('motoEndpoint'), (n) => {
      if (n === 12 || n === 30) return { kind: 'stall', ms: 3_000 };
      if (n % 7 === 0) return { kind: 'status', status: 503 };
      if (n % 11 === 0) return { kind: 'reset' };
      return { kind: 'pass' };
    });
    const s3 = new S3Client({
      endpoint: proxy.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      forcePathStyle: true,
      maxAttempts: 3,
      requestHandler: { connectionTimeout: 1_000, requestTimeout: 1_500, throwOnRequestTimeout: true },
    });
    stack = await startTestStack({ s3 });
    const detector = await registerDetector(stack.registry);

    const { batchId } = await stack.client.startBatch({
      input: 's3://faulty-in/images',
      output: 's3://faulty-out/results',
      model: detector.name,
      shardSize: 2,
      checkpointEvery: 1,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    expect(summary.imagesFailed).toBe(0);
    expect(proxy.injected.status).toBeGreaterThan(0);
    expect(proxy.injected.reset).toBeGreaterThan(0);
    expect(proxy.injected.stall).toBe(2);

    const manifest = await stack.client.manifest(batchId);
    const records: OutputRecord[] = [];
    for (const shard of manifest.shards) {
      const object = await motoS3().send(new GetObjectCommand({ Bucket: 'faulty-out', Key: shard.output.replace('s3://faulty-out/', '') }));
      records.push(...(await object.Body!.transformToString()).trim().split('\n').map((line) => JSON.parse(line) as OutputRecord));
    }
    expectEveryInputOnce(records, images.length);
  });

  it('keeps finished images and drops later ones when a mask upload fails mid-pipeline', async () => {
    const images = ['text.png', 'page.png', 'coins.png', 'camera.png', 'moon.png', 'horse.png', 'chelsea.png', 'coffee.png', 'astronaut.png', 'clock_motion.png'];
    await uploadFolder(motoS3(), sampleFolder(images), 'pipeline-in', 'images');
    await motoS3().send(new CreateBucketCommand({ Bucket: 'pipeline-out' }));
    // The first upload of image 4's mask fails while later images are in inference or upload.
    let failedOnce = false;
    proxy = await startFaultProxy(inject('motoEndpoint'), (_n, method, requestPath) => {
      if (method === 'PUT' && requestPath.includes('/masks/000000004.png') && !failedOnce) {
        failedOnce = true;
        return { kind: 'status', status: 503 };
      }
      return { kind: 'pass' };
    });
    const s3 = new S3Client({ endpoint: proxy.endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, forcePathStyle: true, maxAttempts: 1 });
    stack = await startTestStack({ s3 });
    const detector = await registerDetector(stack.registry);

    const { batchId } = await stack.client.startBatch({
      input: 's3://pipeline-in/images',
      output: 's3://pipeline-out/results',
      model: detector.name,
      shardSize: images.length,
      checkpointEvery: 10,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    expect(failedOnce).toBe(true);

    const [shard] = (await stack.client.manifest(batchId)).shards;
    // Images 0-3 were checkpointed by the failed attempt; the next one resumed at image 4.
    expect(shard.attempts.map((attempt) => [attempt.outcome, attempt.startCursor, attempt.endCursor])).toEqual([
      ['failed', 0, 4],
      ['completed', 4, images.length],
    ]);
    const object = await motoS3().send(new GetObjectCommand({ Bucket: 'pipeline-out', Key: shard.output.replace('s3://pipeline-out/', '') }));
    const records = (await object.Body!.transformToString()).trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
    expect(records.map((record) => record.index)).toEqual(Array.from({ length: images.length }, (_, i) => i));
    expectEveryInputOnce(records, images.length);
  });

  it('survives an orchestrator killed mid-batch', async () => {
    stack = await startTestStack({ orchestrator: false });
    const detector = await registerDetector(stack.registry);
    orchestrator = await spawnOrchestratorWorker(stack);
    const { batchId } = await stack.client.startBatch({ input: sampleFolder(12), model: detector.name, shardSize: 2, maxConcurrentShards: 1, taskQueue: stack.gpuTaskQueue });

    const deadline = Date.now() + 120_000;
    while ((await stack.client.progress(batchId)).shardsDone < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    orchestrator.child.kill('SIGKILL');
    await orchestrator.exited;
    expect((await stack.client.progress(batchId).catch(() => null))?.shardsDone ?? 0).toBeLessThan(6);
    orchestrator = await spawnOrchestratorWorker(stack);

    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    const manifest = await stack.client.manifest(batchId);
    const records = manifest.shards.flatMap((shard) => readFileSync(fileURLToPath(shard.output), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord));
    expectEveryInputOnce(records, 12);
  });

  it('survives a Temporal server restart mid-batch', async () => {
    const port = await findFreePort();
    const dbFile = path.join(tempDir('restart'), 'temporal.db');
    const options = { grpcPort: port, uiPort: await findFreePort(), headless: true, dbFile, logFile: `${dbFile}.log` };
    server = await startDevServer(options);
    stack = await startTestStack({ address: server.address });
    const detector = await registerDetector(stack.registry);
    const { batchId } = await stack.client.startBatch({ input: sampleFolder(12), model: detector.name, shardSize: 2, maxConcurrentShards: 1, taskQueue: stack.gpuTaskQueue });

    const deadline = Date.now() + 120_000;
    while ((await stack.client.progress(batchId)).shardsDone < 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    await server.stop();
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    server = await startDevServer(options);

    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    const manifest = await stack.client.manifest(batchId);
    const records = manifest.shards.flatMap((shard) => readFileSync(fileURLToPath(shard.output), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord));
    expectEveryInputOnce(records, 12);
  });
});
