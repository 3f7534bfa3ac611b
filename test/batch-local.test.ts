import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../activities/storage/hash';
import { toFileUri } from '../activities/storage/uri';
import type { ModelVersion, OutputRecord } from '../activities/types';
import { registerClassifier, registerDetector, sampleFolder, startTestStack, tempDir, type TestStack } from './helpers';

function readJsonl(uri: string): OutputRecord[] {
  return readFileSync(fileURLToPath(uri), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord);
}

describe('batch over local files', () => {
  let stack: TestStack;
  let detector: ModelVersion;

  beforeAll(async () => {
    stack = await startTestStack();
    detector = await registerDetector(stack.registry);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('segments real images end to end', async () => {
    const images = ['text.png', 'page.png', 'camera.png', 'coins.png', 'rocket.jpg'];
    const folder = sampleFolder(images);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      checkpointEvery: 1,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);

    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(5);
    expect(summary.imagesFailed).toBe(0);
    expect(summary.shards).toBe(3);
    expect(summary.model).toEqual({ name: detector.name, version: detector.version, sha256: detector.sha256 });
    expect(summary.costUsd).toBe(0);
    expect(summary.output).toBe(`${stack.resultsRoot}/${batchId}`);

    const manifest = await stack.client.manifest(batchId);
    expect(manifest.batchId).toBe(batchId);
    expect(manifest.model.sha256).toBe(detector.sha256);
    expect(manifest.images).toBe(5);
    expect(manifest.shards.map((shard) => shard.index)).toEqual([0, 1, 2]);
    expect(manifest.shards.map((shard) => shard.images)).toEqual([2, 2, 1]);

    const records: OutputRecord[] = [];
    for (const shard of manifest.shards) {
      const body = readFileSync(fileURLToPath(shard.output));
      expect(sha256Hex(body)).toBe(shard.sha256);
      expect(shard.capacity.host).toBe('test-host');
      records.push(...readJsonl(shard.output));
    }
    expect(records.map((record) => path.basename(record.input)).sort()).toEqual([...images].sort());
    expect(records.map((record) => record.index)).toEqual([0, 1, 2, 3, 4]);

    const text = records.find((record) => record.input.endsWith('/text.png'));
    expect(text?.status).toBe('ok');
    expect(text?.modelSha256).toBe(detector.sha256);
    expect(text?.inputEtag).toBe(`sha256:${sha256Hex(readFileSync(path.join(folder, 'text.png')))}`);
    expect(text?.regions?.length).toBeGreaterThan(3);
    const region = text!.regions![0];
    expect(region.area).toBeGreaterThan(0);
    expect(region.meanScore).toBeGreaterThan(0.3);
    expect(region.meanScore).toBeLessThanOrEqual(1);

    const mask = await sharp(fileURLToPath(text!.mask!)).metadata();
    expect(mask.format).toBe('png');
    expect([mask.width, mask.height]).toEqual([text!.width, text!.height]);
  });

  it('records a corrupt image as failed', async () => {
    const folder = sampleFolder(['text.png', 'coins.png']);
    writeFileSync(path.join(folder, 'broken.png'), Buffer.from('this is not a png'));
    writeFileSync(path.join(folder, 'empty.jpg'), Buffer.alloc(0));
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: detector.name,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);

    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(4);
    expect(summary.imagesFailed).toBe(2);
    const manifest = await stack.client.manifest(batchId);
    const records = readJsonl(manifest.shards[0].output);
    const broken = records.find((record) => record.input.endsWith('broken.png'));
    const empty = records.find((record) => record.input.endsWith('empty.jpg'));
    expect(broken?.status).toBe('failed');
    expect(broken?.error).toMatch(/^undecodable: /);
    expect(empty?.status).toBe('failed');
    expect(empty?.error).toMatch(/^empty: /);
    expect(records.filter((record) => record.status === 'ok')).toHaveLength(2);
  });

  it('records unreadable and oversized inputs as failed', async () => {
    const folder = sampleFolder(['coins.png']);
    mkdirSync(path.join(folder, 'folder.png'));
    // A PNG header that claims 100000 x 100000 pixels, far past sharp's own default limit.
    const huge = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#000' } }).png().toBuffer();
    huge.writeUInt32BE(100_000, 16);
    huge.writeUInt32BE(100_000, 20);
    writeFileSync(path.join(folder, 'huge.png'), huge);
    const list = path.join(folder, 'images.txt');
    writeFileSync(list, ['coins.png', 'folder.png', 'huge.png', 'missing.png', `${toFileUri(folder)}/nul%00byte.png`].join('\n'));

    const { batchId } = await stack.client.startBatch({ input: list, model: detector.name, checkpointEvery: 1, taskQueue: stack.gpuTaskQueue });
    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    expect(summary.imagesFailed).toBe(4);
    const records = readJsonl((await stack.client.manifest(batchId)).shards[0].output);
    expect(records.map((record) => record.status)).toEqual(['ok', 'failed', 'failed', 'failed', 'failed']);
    expect(records[1].error).toMatch(/^unreadable: EISDIR/);
    expect(records[2].error).toMatch(/^too-large: .*100000x100000/);
    expect(records[3].error).toMatch(/^unreadable: NotFound/);
    expect(records[4].error).toMatch(/^unreadable: ERR_INVALID_ARG_VALUE: .*null bytes/);
  });

  it('batches images into one model call', async () => {
    const images = ['text.png', 'page.png', 'camera.png', 'coins.png', 'rocket.jpg'];
    const folder = sampleFolder(images);
    writeFileSync(path.join(folder, 'broken.png'), Buffer.from('not a png'));
    const batched = await startTestStack({ inferenceBatch: 4 });
    try {
      const model = await registerDetector(batched.registry);
      const one = await stack.client.startBatch({ input: folder, model: detector.name, taskQueue: stack.gpuTaskQueue });
      const four = await batched.client.startBatch({ input: folder, model: model.name, taskQueue: batched.gpuTaskQueue });
      const single = readJsonl((await stack.client.manifest(one.batchId)).shards[0].output);
      const grouped = readJsonl((await batched.client.manifest(four.batchId)).shards[0].output);

      expect(grouped.map((record) => record.status)).toEqual(single.map((record) => record.status));
      expect(grouped.filter((record) => record.status === 'failed')).toHaveLength(1);
      for (let i = 0; i < single.length; i++) {
        expect(grouped[i].input).toBe(single[i].input);
        expect(grouped[i].regions?.length).toBe(single[i].regions?.length);
        expect(grouped[i].regions?.map((region) => region.box)).toEqual(single[i].regions?.map((region) => region.box));
      }
    } finally {
      await batched.stop();
    }
  });

  it('classifies with top-k labels', async () => {
    const labels = path.join(tempDir('labels'), 'labels.txt');
    writeFileSync(labels, '0\n180\n');
    const classifier = await registerClassifier(stack.registry, labels);
    const folder = sampleFolder(['text.png', 'page.png']);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: `${classifier.name}@${classifier.version}`,
      topK: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    const manifest = await stack.client.manifest(batchId);
    const records = readJsonl(manifest.shards[0].output);

    expect(records).toHaveLength(2);
    for (const record of records) {
      expect(record.status).toBe('ok');
      expect(record.labels?.map((entry) => entry.label).sort()).toEqual(['0', '180']);
      const total = record.labels!.reduce((sum, entry) => sum + entry.score, 0);
      expect(total).toBeCloseTo(1, 3);
      expect(record.mask).toBeUndefined();
    }
  });

  it('reads a manifest file of image paths', async () => {
    const folder = sampleFolder(['text.png', 'coins.png', 'camera.png']);
    const list = path.join(folder, 'images.txt');
    // A byte order mark, CRLF endings, comments spanning several read chunks and no final newline.
    const comments = Array.from({ length: 3000 }, (_, i) => `# comment ${i}, long enough to fill more than one chunk`).join('\r\n');
    writeFileSync(list, `\uFEFFtext.png\r\n${comments}\r\n${path.join(folder, 'camera.png')}`);
    const { batchId } = await stack.client.startBatch({ input: list, model: detector.name, taskQueue: stack.gpuTaskQueue });
    const summary = await stack.client.result(batchId);

    expect(summary.images).toBe(2);
    const manifest = await stack.client.manifest(batchId);
    const inputs = readJsonl(manifest.shards[0].output).map((record) => path.basename(record.input));
    expect(inputs).toEqual(['text.png', 'camera.png']);
  });
});
