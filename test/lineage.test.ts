import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { batchFolderOf, findOutputLineage, producingAttempt, type OutputLineage } from '../activities/audit/output-lineage';
import { createObjectStore } from '../activities/storage/stores';
import type { ModelVersion, OutputRecord, ShardAttempt } from '../activities/types';
import type { BatchManifest } from '../activities/write-manifest';
import type { ModelBatch } from '../client/skynewt-client';
import { findFreePort } from '../infra/local/ports';
import { registerDetector, sampleFolder, startTestStack, TEST_CAPACITY, type TestStack } from './helpers';

const run = promisify(execFile);
const CLI = path.resolve(__dirname, '..', 'cli', 'skynewt.js');

describe('lineage', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  let batchId: string;
  let manifest: BatchManifest;
  const store = createObjectStore();

  beforeAll(async () => {
    stack = await startTestStack();
    detector = await registerDetector(stack.registry);
    ({ batchId } = await stack.client.startBatch({
      input: sampleFolder(['text.png', 'page.png', 'coins.png']),
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      taskQueue: stack.gpuTaskQueue,
    }));
    manifest = await stack.client.manifest(batchId);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('lists batches by model version', async () => {
    let batches: ModelBatch[] = [];
    // Visibility indexes a closed workflow shortly after it closes.
    for (let tries = 0; tries < 50; tries++) {
      batches = await stack.client.batchesUsingModel(detector.name, detector.version);
      if (batches.some((batch) => batch.batchId === batchId && batch.status === 'COMPLETED')) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    const found = batches.find((batch) => batch.batchId === batchId);
    expect(found?.status).toBe('COMPLETED');
    expect(found?.manifest).toBe(manifest.output + '/manifest.json');
    expect(found?.modelAlias).toBeNull();
    expect(await stack.client.batchesUsingModel(detector.name, 'no-such-version')).toEqual([]);
  });

  it('traces a mask to its input', async () => {
    const records = (await store.get(manifest.shards[1].output)).body.toString('utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
    const record = records[0];
    expect(record.mask).toBeDefined();

    const lineage = await findOutputLineage(record.mask!, store);
    expect(lineage.kind).toBe('mask');
    expect(lineage.batchId).toBe(batchId);
    expect(lineage.model.sha256).toBe(detector.sha256);
    expect(lineage.shard.index).toBe(1);
    expect(lineage.record?.input).toBe(record.input);
    expect(lineage.record?.inputEtag).toBe(record.inputEtag);
    expect(lineage.record?.line).toBe(1);
    expect(lineage.attempt?.capacity?.host).toBe(TEST_CAPACITY.host);
  });

  it('traces a shard output', async () => {
    const lineage = await findOutputLineage(manifest.shards[0].output, store);
    expect(lineage.kind).toBe('shard-output');
    expect(lineage.shard.sha256).toBe(manifest.shards[0].sha256);
    expect(lineage.shard.capacity.host).toBe(TEST_CAPACITY.host);
    expect(lineage.record).toBeUndefined();
  });

  it('rejects URIs outside a batch', async () => {
    expect(() => batchFolderOf('/tmp/elsewhere/file.png')).toThrow(/shards\/ or masks\//);
    await expect(findOutputLineage(`${manifest.output}/masks/999999999.png`, store)).rejects.toThrow(/neither a shard output nor a mask/);
  });

  it('picks the attempt covering an offset', () => {
    const attempt = (number: number, startCursor: number, endCursor: number): ShardAttempt => ({
      attempt: number,
      taskQueue: 'q',
      capacity: null,
      outcome: 'interrupted',
      startCursor,
      endCursor,
      costUsd: 0,
    });
    const attempts = [attempt(1, 0, 10), attempt(2, 10, 10), attempt(3, 10, 25)];
    expect(producingAttempt(attempts, 4)?.attempt).toBe(1);
    expect(producingAttempt(attempts, 10)?.attempt).toBe(3);
    expect(producingAttempt(attempts, 25)).toBeNull();
  });

  it('traces a mask from the command line', async () => {
    const records = (await store.get(manifest.shards[0].output)).body.toString('utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
    const env = { ...process.env, SKYNEWT_HOME: stack.home, SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${await findFreePort()}` };
    const { stdout } = await run(process.execPath, [CLI, 'lineage', records[1].mask!, '--json'], { env, timeout: 120_000 });
    const lineage = JSON.parse(stdout) as OutputLineage;
    expect(lineage.record?.index).toBe(records[1].index);
    expect(lineage.record?.input).toBe(records[1].input);
  });
});
