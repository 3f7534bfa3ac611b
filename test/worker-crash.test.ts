import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultPayloadConverter } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { OutputRecord, ShardCheckpoint, ShardResult } from '../activities/types';
import { tsNodeCommand } from '../infra/local/node-command';
import { registerDetector, startTestStack, tempDir, type TestStack } from './helpers';

const IMAGES = 24;

/** Starts the real inference worker entry point in a child process and waits until it polls. */
async function spawnInferenceWorker(stack: TestStack, instanceId: string): Promise<ChildProcess> {
  const [command, ...args] = tsNodeCommand('workers/inference.ts');
  const child = spawn(command, args, {
    env: {
      ...process.env,
      SKYNEWT_TEMPORAL_ADDRESS: inject('temporalAddress'),
      SKYNEWT_TASK_QUEUE: stack.gpuTaskQueue,
      SKYNEWT_REGISTRY_DIR: path.join(stack.home, 'registry'),
      SKYNEWT_INSTANCE_ID: instanceId,
      SKYNEWT_INTRA_OP_THREADS: '1',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('SKYNEWT_WORKER_READY')) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.on('exit', (code) => reject(new Error(`inference worker exited with ${code} before it was ready:\n${output}`)));
  });
  return child;
}

async function checkpointOf(stack: TestStack, batchId: string): Promise<ShardCheckpoint | null> {
  const description = await stack.client.handle(batchId).describe();
  const payload = description.raw.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0];
  return payload ? defaultPayloadConverter.fromPayload<ShardCheckpoint>(payload) : null;
}

describe('inference worker killed mid-shard', () => {
  let stack: TestStack;
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    stack = await startTestStack({ inference: false });
  });
  afterAll(async () => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await stack?.stop();
  });

  it('resumes at the heartbeated cursor with every input once', async () => {
    const detector = await registerDetector(stack.registry);
    const samples = inject('samplesDir');
    const folder = tempDir('crash');
    const names = readdirSync(samples).sort();
    for (let i = 0; i < IMAGES; i++) copyFileSync(path.join(samples, names[i % names.length]), path.join(folder, `img-${String(i).padStart(3, '0')}${path.extname(names[i % names.length])}`));

    const first = await spawnInferenceWorker(stack, 'worker-a');
    children.push(first);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: `${detector.name}@${detector.version}`,
      shardSize: IMAGES,
      checkpointEvery: 2,
      taskQueue: stack.gpuTaskQueue,
    });

    // Kill once a checkpoint past the first few images has reached the server.
    let seen: ShardCheckpoint | null = null;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      seen = await checkpointOf(stack, batchId);
      if (seen && seen.cursor >= 6) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(seen?.cursor).toBeGreaterThanOrEqual(6);
    expect(seen!.cursor).toBeLessThan(IMAGES);
    first.kill('SIGKILL');
    await new Promise((resolve) => first.once('exit', resolve));
    const lastBeforeKill = (await checkpointOf(stack, batchId))!;

    children.push(await spawnInferenceWorker(stack, 'worker-b'));
    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(IMAGES);

    const history = await stack.client.handle(batchId).fetchHistory();
    const completed = (history.events ?? []).find((event) => event.activityTaskCompletedEventAttributes && event.activityTaskCompletedEventAttributes.result?.payloads?.[0]);
    const resultPayloads = (history.events ?? [])
      .map((event) => event.activityTaskCompletedEventAttributes?.result?.payloads?.[0])
      .filter((payload) => payload !== undefined)
      .map((payload) => defaultPayloadConverter.fromPayload<Record<string, unknown>>(payload!));
    expect(completed).toBeDefined();
    const shard = resultPayloads.find((payload) => 'shardIndex' in payload) as unknown as ShardResult;
    expect(shard.attempt).toBe(2);
    expect(shard.resumedFrom).toBe(lastBeforeKill.cursor);
    expect(shard.capacity.host).toBe('worker-b');

    const manifest = await stack.client.manifest(batchId);
    const records = readFileSync(fileURLToPath(manifest.shards[0].output), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
    expect(records.map((record) => record.index)).toEqual(Array.from({ length: IMAGES }, (_, i) => i));
    expect(new Set(records.map((record) => record.input)).size).toBe(IMAGES);
    expect(records.every((record) => record.status === 'ok')).toBe(true);
  });
});
