import { NativeConnection, type Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { CostMeter } from '../activities/cost-meter';
import { loadOnDemandPrices } from '../activities/pricing/on-demand';
import { PriceHistory } from '../activities/pricing/price-feed';
import { createObjectStore } from '../activities/storage/stores';
import { joinUri } from '../activities/storage/uri';
import { readManifest } from '../client/skynewt-client';
import type { Capacity, ModelVersion, ShardAttempt } from '../activities/types';
import type { BatchManifest, ManifestShard } from '../activities/write-manifest';
import { costReport } from '../cli/cost-command';
import { createInferenceWorker } from '../workers/inference';
import { motoS3, registerDetector, sampleFolder, startTestStack, type TestStack } from './helpers';

/** USD per hour of the test host: one cent per second, so costs read as seconds ÷ 100. */
const SPOT_PRICE = 36;
const G5_ON_DEMAND = 1.006;

const SPOT_CAPACITY: Capacity = {
  host: 'i-cost-test',
  instanceType: 'g5.xlarge',
  availabilityZone: 'us-east-1a',
  lifecycle: 'spot',
  buildId: 'test',
  hourlyRateUsd: SPOT_PRICE,
};

describe('batch cost with a known price feed', () => {
  let stack: TestStack;
  let detector: ModelVersion;
  let connection: NativeConnection;
  let worker: Worker;
  let running: Promise<void>;

  beforeAll(async () => {
    stack = await startTestStack({ inference: false });
    detector = await registerDetector(stack.registry);
    connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    worker = await createInferenceWorker({
      connection,
      namespace: 'default',
      taskQueue: stack.gpuTaskQueue,
      store: createObjectStore({ s3: motoS3() }),
      registry: stack.registry,
      runner: stack.runner,
      capacity: SPOT_CAPACITY,
      // Injected history, as a SpotPriceFeed would hold after a fetch.
      priceFeed: new PriceHistory([{ timestampMs: Date.now() - 3_600_000, priceUsd: SPOT_PRICE }]),
      shardConcurrency: 1,
      prewarmModels: [],
    });
    running = worker.run();
  });
  afterAll(async () => {
    worker?.shutdown();
    await running;
    await connection?.close();
    await stack?.stop();
  });

  it('charges seconds × price and reports it', async () => {
    const folder = sampleFolder(['text.png', 'page.png', 'camera.png', 'coins.png']);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      checkpointEvery: 1,
      taskQueue: stack.gpuTaskQueue,
    });
    // The manifest is read from storage because the workflow writes it before its last steps,
    // whose outcome this test does not depend on.
    await stack.client.result(batchId).catch(() => undefined);
    const manifest = await readManifest(joinUri(stack.resultsRoot, batchId, 'manifest.json'));
    expect(manifest.shards).toHaveLength(2);

    for (const shard of manifest.shards) {
      expect(shard.wallSeconds).toBeGreaterThan(0);
      // wallSeconds is rounded to the millisecond, so the tolerance is a millisecond's price.
      expect(Math.abs(shard.costUsd - (shard.wallSeconds * SPOT_PRICE) / 3600)).toBeLessThan(0.00002);
      expect(shard.attempts).toHaveLength(1);
      expect(shard.attempts[0].costUsd).toBeCloseTo(shard.costUsd, 9);
      expect(shard.capacity.hourlyRateUsd).toBe(SPOT_PRICE);
    }
    const shardCost = manifest.shards.reduce((sum, shard) => sum + shard.costUsd, 0);
    expect(manifest.costUsd).toBeCloseTo(shardCost, 9);

    const report = costReport(manifest, loadOnDemandPrices(null));
    expect(report.totalCostUsd).toBeCloseTo(shardCost, 9);
    expect(report.costPer1000ImagesUsd).toBeCloseTo((shardCost / 4) * 1000, 6);
    expect(report.wastedCostUsd).toBe(0);
    expect(report.onDemandCostUsd).toBeCloseTo((shardCost * G5_ON_DEMAND) / SPOT_PRICE, 9);
    expect(report.attemptsWithoutOnDemandPrice).toBe(0);
    // The first shard carries the host's idle time since the worker started; the second its gap.
    expect(manifest.shards.every((shard) => (shard.attempts[0].idleCostUsd ?? -1) >= 0)).toBe(true);
    expect(report.idleCostUsd).toBeCloseTo(manifest.shards.reduce((sum, shard) => sum + (shard.attempts[0].idleCostUsd ?? 0), 0), 9);
    expect(report.notes.join('\n')).toContain('Idle cost is the host time with no shard running');
    expect(report.byCapacity).toEqual([
      { instanceType: 'g5.xlarge', lifecycle: 'spot', attempts: 2, costUsd: expect.closeTo(shardCost, 9), hostHours: expect.closeTo(shardCost / SPOT_PRICE, 9) },
    ]);
  });
});

describe('cost meter idle time', () => {
  it('charges idle time to the next shard', () => {
    let now = 0;
    const meter = new CostMeter(3600, () => now);
    now = 10_000;
    const first = meter.start();
    now = 20_000;
    expect(first.stop()).toEqual({ seconds: 10, costUsd: 10, idleCostUsd: 10 });
    now = 25_000;
    const second = meter.start();
    const third = meter.start();
    now = 35_000;
    expect(second.stop()).toEqual({ seconds: 10, costUsd: 5, idleCostUsd: 5 });
    expect(third.stop()).toEqual({ seconds: 10, costUsd: 5, idleCostUsd: 0 });
  });
});

function attempt(outcome: ShardAttempt['outcome'], costUsd: number, capacity: Capacity | null = SPOT_CAPACITY): ShardAttempt {
  return { attempt: 1, taskQueue: 'q', capacity, outcome, startCursor: 0, endCursor: 1, costUsd };
}

function manifestWith(shards: Array<Pick<ManifestShard, 'attempts'>>, failedAttempts: ShardAttempt[]): BatchManifest {
  return {
    batchId: 'b-1',
    images: 400,
    imagesOk: 300,
    costUsd: 0,
    shards: shards.map((shard, index) => ({ index, images: 100, failed: 0, capacity: SPOT_CAPACITY, costUsd: 0, wallSeconds: 0, ...shard })),
    failedShards: failedAttempts.length ? [{ shardIndex: 9, error: 'ShardError: broken', attempts: failedAttempts }] : [],
  } as unknown as BatchManifest;
}

describe('cost report', () => {
  it('counts incomplete attempts as wasted', () => {
    const local: Capacity = { ...SPOT_CAPACITY, instanceType: 'local', availabilityZone: 'local', lifecycle: 'local', hourlyRateUsd: 0 };
    const manifest = manifestWith(
      [
        { attempts: [attempt('interrupted', 0.1), attempt('completed', 0.2)] },
        { attempts: [attempt('host-lost', 0.05), attempt('failed', 0.01), attempt('completed', 0.3)] },
        { attempts: [attempt('completed', 0, local)] },
      ],
      [attempt('failed', 0.04), attempt('host-lost', 0, null)],
    );
    const report = costReport(manifest, loadOnDemandPrices(null));

    expect(report.totalCostUsd).toBeCloseTo(0.7, 12);
    expect(report.costPer1000ImagesUsd).toBeCloseTo(1.75, 12);
    expect(report.wastedByOutcome.interrupted).toBeCloseTo(0.1, 12);
    expect(report.wastedByOutcome['host-lost']).toBeCloseTo(0.05, 12);
    expect(report.wastedByOutcome.failed).toBeCloseTo(0.01, 12);
    expect(report.wastedByOutcome.failedShards).toBeCloseTo(0.04, 12);
    expect(report.wastedCostUsd).toBeCloseTo(0.2, 12);
    expect(report.onDemandCostUsd).toBeCloseTo((0.7 * G5_ON_DEMAND) / SPOT_PRICE, 12);
    expect(report.attemptsWithoutOnDemandPrice).toBe(2);
    expect(report.notes.join('\n')).toContain('2 of 8 attempts have no on-demand equivalent');
  });

  it('has no on-demand figure without rates', () => {
    const local: Capacity = { ...SPOT_CAPACITY, lifecycle: 'local', hourlyRateUsd: 0 };
    const report = costReport(manifestWith([{ attempts: [attempt('completed', 0, local)] }], []), loadOnDemandPrices(null));
    expect(report.totalCostUsd).toBe(0);
    expect(report.onDemandCostUsd).toBeNull();
    expect(report.byCapacity[0].hostHours).toBeNull();
  });
});
