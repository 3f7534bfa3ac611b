import { appendFileSync, copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelVersion } from '../activities/types';
import { registerDetector, sampleFolder, startTestStack, type TestStack } from './helpers';

async function failureOf(promise: Promise<unknown>): Promise<ApplicationFailure> {
  const err = await promise.then(() => null, (error: unknown) => error);
  expect(err).toBeInstanceOf(WorkflowFailedError);
  let cause: unknown = (err as WorkflowFailedError).cause;
  // Activity failures wrap the application failure one level down.
  while (cause instanceof Error && !(cause instanceof ApplicationFailure)) cause = cause.cause;
  expect(cause).toBeInstanceOf(ApplicationFailure);
  return cause as ApplicationFailure;
}

describe('batch input errors', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  let folder: string;

  beforeAll(async () => {
    stack = await startTestStack();
    detector = await registerDetector(stack.registry);
    folder = sampleFolder(['text.png']);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['shardSize out of range', { shardSize: 0 }, /"shardSize" is 0; accepted values are integers from 1 to 5000/],
    ['shardSize not a number', { shardSize: '200' }, /"shardSize" is "200"/],
    ['checkpointEvery above shardSize', { shardSize: 10, checkpointEvery: 11 }, /"checkpointEvery" is 11; accepted values are integers from 1 to 10/],
    ['unknown field', { shard_size: 5 }, /unknown field "shard_size"/],
    ['bad model reference', { model: 'Bad Name' }, /"model" is "Bad Name"/],
    ['relative input path', { input: 'images/' }, /"input" is "images\/"; accepted values are s3:\/\/bucket\/prefix/],
    ['http input', { input: 'http://example.com/a.png' }, /"input" is "http:\/\/example.com\/a.png"/],
    ['missing model', { model: undefined }, /"model" is required/],
    ['bucket name with two dots', { input: 's3://ab..cd/images' }, /invalid bucket "ab..cd"/],
    ['bucket name like an IP address', { output: 's3://192.168.0.1/out' }, /invalid bucket "192.168.0.1"/],
  ];

  for (const [name, override, message] of cases) {
    it(`rejects ${name}`, async () => {
      const start = stack.client.startBatch({ input: folder, model: detector.name, taskQueue: stack.gpuTaskQueue, ...override } as never);
      const failure = await failureOf(start.then(({ batchId }) => stack.client.result(batchId)));
      expect(failure.type).toBe('InvalidBatchInput');
      expect(failure.nonRetryable).toBe(true);
      expect(failure.message).toMatch(message);
    });
  }

  it('rejects a binary file that is not an image', async () => {
    const folder = sampleFolder(['coins.png']);
    const renamed = `${folder}/coins.bmp`;
    copyFileSync(`${folder}/coins.png`, renamed);
    const { batchId } = await stack.client.startBatch({ input: renamed, model: detector.name, taskQueue: stack.gpuTaskQueue });
    const failure = await failureOf(stack.client.result(batchId));
    expect(failure.type).toBe('InvalidBatchInput');
    expect(failure.message).toContain('is neither an image');
  });

  it('rejects a batch id another workflow uses', async () => {
    const input = { input: folder, model: detector.name, batchId: `shared-${Date.now()}`, taskQueue: stack.gpuTaskQueue };
    const first = await stack.client.client.workflow.start('batchInference', { taskQueue: stack.taskQueue, workflowId: `${input.batchId}-a`, args: [input] });
    await first.result();
    const second = await stack.client.client.workflow.start('batchInference', { taskQueue: stack.taskQueue, workflowId: `${input.batchId}-b`, args: [input] });
    const failure = await failureOf(second.result());
    expect(failure.type).toBe('InvalidBatchInput');
    expect(failure.message).toContain('already has finished results');
  });

  it('rejects an input folder without images', async () => {
    const empty = sampleFolder([]);
    const { batchId } = await stack.client.startBatch({ input: empty, model: detector.name, taskQueue: stack.gpuTaskQueue });
    const failure = await failureOf(stack.client.result(batchId));
    expect(failure.type).toBe('InvalidBatchInput');
    expect(failure.message).toContain(`contains no images`);
  });

  it('rejects a model that is not registered', async () => {
    const { batchId } = await stack.client.startBatch({ input: folder, model: 'no-such-model@1', taskQueue: stack.gpuTaskQueue });
    const failure = await failureOf(stack.client.result(batchId));
    expect(failure.type).toBe('ModelNotFound');
    expect(failure.message).toContain('no-such-model');
  });

  it('rejects a tampered model before any shard', async () => {
    const tampered = sampleFolder(['coins.png']);
    appendFileSync(fileURLToPath(detector.artifactUri), Buffer.from('tampered'));
    const { batchId } = await stack.client.startBatch({ input: tampered, model: `${detector.name}@${detector.version}`, taskQueue: stack.gpuTaskQueue });
    const failure = await failureOf(stack.client.result(batchId));
    expect(failure.type).toBe('ModelChecksumMismatch');
    expect(failure.message).toContain(detector.sha256);

    const history = await stack.client.handle(batchId).fetchHistory();
    const scheduled = (history.events ?? []).map((event) => event.activityTaskScheduledEventAttributes?.activityType?.name).filter(Boolean);
    expect(scheduled).toEqual(['resolveModel']);
  });
});
