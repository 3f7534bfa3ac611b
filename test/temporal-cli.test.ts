import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { resolveTemporalCli } from '../infra/local/temporal-cli';
import { registerDetector, sampleFolder, startTestStack, type TestStack } from './helpers';

describe('batch started with the temporal CLI', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startTestStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('runs from temporal workflow start', async () => {
    const detector = await registerDetector(stack.registry);
    const folder = sampleFolder(['text.png', 'coins.png']);
    const input = { input: `file://${folder}`, model: `${detector.name}@${detector.version}`, taskQueue: stack.gpuTaskQueue };
    const workflowId = `cli-${Date.now()}`;

    execFileSync(resolveTemporalCli(), [
      'workflow', 'start',
      '--address', inject('temporalAddress'),
      '--type', 'batchInference',
      '--task-queue', stack.taskQueue,
      '--workflow-id', workflowId,
      '--input', JSON.stringify(input),
    ], { stdio: 'pipe' });

    const summary = await stack.client.result(workflowId);
    expect(summary.batchId).toBe(workflowId);
    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(2);
    expect(summary.model.sha256).toBe(detector.sha256);

    const description = await stack.client.handle(workflowId).describe();
    const names = description.typedSearchAttributes.getAll().map((pair) => pair.key.name).filter((name) => name.startsWith('SkyNewt'));
    expect(names.sort()).toEqual(
      ['SkyNewtBatchId', 'SkyNewtCostUsd', 'SkyNewtImages', 'SkyNewtImagesFailed', 'SkyNewtModel', 'SkyNewtModelSha256'],
    );
    expect(description.typedSearchAttributes.getAll().find((pair) => pair.key.name === 'SkyNewtModel')?.value).toBe(`${detector.name}@${detector.version}`);
  });
});
