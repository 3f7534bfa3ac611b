import { CreateBucketCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { WorkflowFailedError } from '@temporalio/client';
import type { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256Hex } from '../activities/storage/hash';
import type { ModelVersion, OutputRecord } from '../activities/types';
import { motoS3, registerDetector, sampleFolder, startTestStack, uploadFolder, type TestStack } from './helpers';

describe('batch over S3', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  const s3 = motoS3();

  beforeAll(async () => {
    stack = await startTestStack();
    detector = await registerDetector(stack.registry);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('reads s3 inputs and writes s3 outputs', async () => {
    const images = ['text.png', 'page.png', 'coins.png'];
    await uploadFolder(s3, sampleFolder(images), 'skynewt-in', 'samples');
    await s3.send(new CreateBucketCommand({ Bucket: 'skynewt-out' }));
    const { batchId } = await stack.client.startBatch({
      input: 's3://skynewt-in/samples',
      model: `${detector.name}@${detector.version}`,
      output: 's3://skynewt-out/results',
      shardSize: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);

    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(3);
    expect(summary.imagesFailed).toBe(0);
    expect(summary.output).toBe(`s3://skynewt-out/results/${batchId}`);
    expect(summary.manifest).toBe(`s3://skynewt-out/results/${batchId}/manifest.json`);

    const manifest = await stack.client.manifest(batchId);
    expect(manifest.shards).toHaveLength(2);
    const records: OutputRecord[] = [];
    for (const shard of manifest.shards) {
      const key = shard.output.replace('s3://skynewt-out/', '');
      const object = await s3.send(new GetObjectCommand({ Bucket: 'skynewt-out', Key: key }));
      const body = Buffer.from(await object.Body!.transformToByteArray());
      expect(sha256Hex(body)).toBe(shard.sha256);
      records.push(...body.toString('utf8').trim().split('\n').map((line) => JSON.parse(line) as OutputRecord));
    }
    expect(records.map((record) => record.input)).toEqual(images.sort().map((name) => `s3://skynewt-in/samples/${name}`));

    const text = records.find((record) => record.input.endsWith('text.png'))!;
    const head = await s3.send(new HeadObjectCommand({ Bucket: 'skynewt-in', Key: 'samples/text.png' }));
    expect(text.inputEtag).toBe(head.ETag!.replaceAll('"', ''));
    expect(text.mask).toMatch(new RegExp(`^s3://skynewt-out/results/${batchId}/masks/\\d+\\.png$`));
    const mask = await s3.send(new HeadObjectCommand({ Bucket: 'skynewt-out', Key: text.mask!.replace('s3://skynewt-out/', '') }));
    expect(mask.ContentType).toBe('image/png');
    expect(mask.Metadata?.['skynewt-model-sha256']).toBe(detector.sha256);

    // Checkpoint parts are removed once the manifest commits the shard outputs.
    const parts = await s3.send(new ListObjectsV2Command({ Bucket: 'skynewt-out', Prefix: `results/${batchId}/parts/` }));
    expect(parts.KeyCount ?? 0).toBe(0);
  });

  it('rejects an output bucket that does not exist', async () => {
    await uploadFolder(s3, sampleFolder(['coins.png']), 'skynewt-in', 'one');
    const { batchId } = await stack.client.startBatch({
      input: 's3://skynewt-in/one',
      model: detector.name,
      output: 's3://no-such-bucket/results',
      taskQueue: stack.gpuTaskQueue,
    });
    const err = await stack.client.result(batchId).then(() => null, (error: Error) => error);
    expect(err).toBeInstanceOf(WorkflowFailedError);
    const cause = (err as WorkflowFailedError).cause?.cause as ApplicationFailure;
    expect(cause.type).toBe('InvalidBatchInput');
    expect(cause.message).toContain('the bucket of "output" s3://no-such-bucket/results');
  });
});
