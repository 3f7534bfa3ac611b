import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServer } from '../infra/local/dev-server';
import { findFreePort } from '../infra/local/ports';
import { registerDetector, sampleFolder, startTestStack, tempDir, type TestStack } from './helpers';

// With the suggestion at 40 events, a batch of 12 one-image shards cannot fit in one run.
const SUGGEST_AT_EVENTS = 40;

describe('batch larger than one history', () => {
  let server: DevServer;
  let stack: TestStack;

  beforeAll(async () => {
    server = await startDevServer({
      grpcPort: await findFreePort(),
      uiPort: await findFreePort(),
      headless: true,
      logFile: path.join(tempDir('can-server'), 'temporal.log'),
      dynamicConfig: [`limit.historyCount.suggestContinueAsNew=${SUGGEST_AT_EVENTS}`],
    });
    stack = await startTestStack({ address: server.address });
  });
  afterAll(async () => {
    await stack?.stop();
    await server?.stop();
  });

  it('continues as new and keeps every shard', async () => {
    const detector = await registerDetector(stack.registry);
    const folder = sampleFolder(12);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: detector.name,
      shardSize: 1,
      maxConcurrentShards: 2,
      taskQueue: stack.gpuTaskQueue,
    });
    const summary = await stack.client.result(batchId);

    expect(summary.status).toBe('completed');
    expect(summary.runs).toBeGreaterThan(1);
    expect(summary.images).toBe(12);
    expect(summary.shards).toBe(12);

    // Visibility records are written after the history, so poll until every run is listed.
    let executions = [];
    for (let tries = 0; tries < 50; tries++) {
      executions = [];
      for await (const execution of stack.client.client.workflow.list({ query: `WorkflowId = '${batchId}'` })) executions.push(execution);
      if (executions.length === summary.runs) break;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    expect(executions).toHaveLength(summary.runs);
    for (const execution of executions) expect(execution.historyLength).toBeLessThan(SUGGEST_AT_EVENTS * 2);

    const manifest = await stack.client.manifest(batchId);
    expect(manifest.shards.map((shard) => shard.index)).toEqual(Array.from({ length: 12 }, (_, i) => i));
    expect(manifest.runs).toBe(summary.runs);
  });
});
