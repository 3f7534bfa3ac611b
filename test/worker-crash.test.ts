import { copyFileSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultPayloadConverter } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { OutputRecord, ShardResult } from '../activities/types';
import { registerDetector, startTestStack, tempDir, type TestStack } from './helpers';
import { killIfRunning, pendingCheckpoint, spawnInferenceWorker, waitForCursor, type WorkerProcess } from './worker-process';

const IMAGES = 24;

describe('inference worker killed mid-shard', () => {
  let stack: TestStack;
  const children: WorkerProcess[] = [];

  beforeAll(async () => {
    stack = await startTestStack({ inference: false });
  });
  afterAll(async () => {
    for (const child of children) killIfRunning(child);
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
    const seen = await waitForCursor(stack, batchId, 6);
    expect(seen.cursor).toBeLessThan(IMAGES);
    first.child.kill('SIGKILL');
    await first.exited;
    const lastBeforeKill = (await pendingCheckpoint(stack, batchId))!;

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
    expect(shard.attempts.map((attempt) => attempt.outcome)).toEqual(['host-lost', 'completed']);
    expect(shard.attempts[0].capacity?.host).toBe('worker-a');
    expect(shard.attempts[0].endCursor).toBe(lastBeforeKill.cursor);

    const manifest = await stack.client.manifest(batchId);
    const records = readFileSync(fileURLToPath(manifest.shards[0].output), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
    expect(records.map((record) => record.index)).toEqual(Array.from({ length: IMAGES }, (_, i) => i));
    expect(new Set(records.map((record) => record.input)).size).toBe(IMAGES);
    expect(records.every((record) => record.status === 'ok')).toBe(true);
  });
});
