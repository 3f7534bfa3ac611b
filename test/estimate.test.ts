import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { EC2Client } from '@aws-sdk/client-ec2';
import { beforeAll, describe, expect, inject, it } from 'vitest';
import { LocalRegistry } from '../activities/registry/local-registry';
import { createObjectStore } from '../activities/storage/stores';
import { toFileUri } from '../activities/storage/uri';
import type { ModelVersion } from '../activities/types';
import { countInputs, estimateBatch, type Estimate } from '../cli/estimate-command';
import { findFreePort } from '../infra/local/ports';
import { registerDetector, sampleFolder, tempDir } from './helpers';

const run = promisify(execFile);
const CLI = path.resolve(__dirname, '..', 'cli', 'skynewt.js');
const G5_ON_DEMAND = 1.006;

function ec2Client(endpoint: string): EC2Client {
  return new EC2Client({ endpoint, region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' }, maxAttempts: 1 });
}

/**
 * Writes an earlier batch's manifest with two g5.xlarge shards of 200 images. Each ran 100 s
 * while sharing its host with one other shard, so it was charged 50 host-seconds: 4 images/s.
 */
function writeEarlierBatch(resultsRoot: string, model: ModelVersion): void {
  const capacity = { host: 'i-1', instanceType: 'g5.xlarge', availabilityZone: 'us-east-1a', lifecycle: 'on-demand', buildId: 'b', hourlyRateUsd: G5_ON_DEMAND };
  const costUsd = (50 * G5_ON_DEMAND) / 3600;
  const shard = (index: number) => ({
    index,
    images: 200,
    failed: 0,
    capacity,
    costUsd,
    wallSeconds: 100,
    attempts: [{ attempt: 1, taskQueue: 'q', capacity, outcome: 'completed', startCursor: 0, endCursor: 200, costUsd }],
  });
  const folder = path.join(resultsRoot, 'b-earlier');
  mkdirSync(folder, { recursive: true });
  writeFileSync(
    path.join(folder, 'manifest.json'),
    JSON.stringify({ batchId: 'b-earlier', model: { name: model.name, version: model.version, sha256: model.sha256 }, images: 400, shards: [shard(0), shard(1)], failedShards: [] }),
  );
}

describe('batch estimate', () => {
  let home: string;
  let resultsRoot: string;
  let registry: LocalRegistry;
  let detector: ModelVersion;
  let images: string;

  beforeAll(async () => {
    home = tempDir('estimate-home');
    resultsRoot = path.join(home, 'results');
    registry = new LocalRegistry(path.join(home, 'registry'));
    detector = await registerDetector(registry);
    writeEarlierBatch(resultsRoot, detector);
    images = sampleFolder(['text.png', 'page.png', 'coins.png']);
  });

  it('counts folders, images and manifest files', async () => {
    const store = createObjectStore();
    expect((await countInputs(store, toFileUri(images))).images).toBe(3);
    expect((await countInputs(store, toFileUri(path.join(images, 'text.png')))).images).toBe(1);
    const list = path.join(tempDir('list'), 'inputs.txt');
    writeFileSync(list, `# two images\n${path.join(images, 'text.png')}\n\n${path.join(images, 'page.png')}\n`);
    const counted = await countInputs(store, toFileUri(list));
    expect(counted.images).toBe(2);
    expect(counted.sample).toEqual([toFileUri(path.join(images, 'text.png')), toFileUri(path.join(images, 'page.png'))]);
  });

  it('ranks measured and probed options', async () => {
    const estimate = await estimateBatch(
      { input: toFileUri(images), model: `${detector.name}@${detector.version}`, instanceTypes: ['g5.xlarge', 'g6.xlarge'], resultsRoot: toFileUri(resultsRoot), probeImages: 2 },
      { store: createObjectStore(), registry, ec2: ec2Client(inject('motoEndpoint')) },
    );
    expect(estimate.images).toBe(3);
    expect(estimate.model.sha256).toBe(detector.sha256);
    expect(estimate.options).toHaveLength(4);

    const g5OnDemand = estimate.options.find((entry) => entry.instanceType === 'g5.xlarge' && entry.lifecycle === 'on-demand')!;
    expect(g5OnDemand.throughput?.source).toBe('measured');
    expect(g5OnDemand.throughput?.imagesPerSecond).toBeCloseTo(4, 9);
    expect(g5OnDemand.hourlyPriceUsd).toBe(G5_ON_DEMAND);
    expect(g5OnDemand.durationSeconds).toBeCloseTo(0.75, 9);
    expect(g5OnDemand.costUsd).toBeCloseTo((0.75 * G5_ON_DEMAND) / 3600, 12);
    expect(g5OnDemand.costPer1000ImagesUsd).toBeCloseTo(((0.75 * G5_ON_DEMAND) / 3600 / 3) * 1000, 12);

    const g5Spot = estimate.options.find((entry) => entry.instanceType === 'g5.xlarge' && entry.lifecycle === 'spot')!;
    expect(g5Spot.hourlyPriceUsd).toBeGreaterThan(0);
    expect(g5Spot.availabilityZone).toMatch(/^us-east-1[a-z]$/);

    const g6 = estimate.options.filter((entry) => entry.instanceType === 'g6.xlarge');
    for (const entry of g6) {
      expect(entry.throughput?.source).toBe('local-probe');
      expect(entry.throughput?.images).toBe(2);
      expect(entry.throughput?.basis).toContain('local probe on');
    }
    expect(estimate.notes.join('\n')).toContain('local probe of 2 images');

    const costs = estimate.options.map((entry) => entry.costPer1000ImagesUsd ?? Infinity);
    expect(costs).toEqual([...costs].sort((a, b) => a - b));
  });

  it('reports unknown spot prices when EC2 is unreachable', async () => {
    const port = await findFreePort();
    const estimate = await estimateBatch(
      { input: toFileUri(images), model: detector.name, instanceTypes: ['g5.xlarge'], resultsRoot: toFileUri(resultsRoot), probeImages: 0 },
      { store: createObjectStore(), registry, ec2: ec2Client(`http://127.0.0.1:${port}`) },
    );
    const spot = estimate.options.find((entry) => entry.lifecycle === 'spot')!;
    expect(spot.hourlyPriceUsd).toBeNull();
    expect(spot.costUsd).toBeNull();
    expect(estimate.options[0].lifecycle).toBe('on-demand');
    expect(estimate.notes.join('\n')).toContain('Spot prices are unknown');
  });

  it('prints from the command line without starting a batch', async () => {
    const env = {
      ...process.env,
      SKYNEWT_HOME: home,
      // No server listens here, so a started batch would fail the command.
      SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${await findFreePort()}`,
      AWS_ENDPOINT_URL_EC2: inject('motoEndpoint'),
    };
    const model = `${detector.name}@${detector.version}`;
    const { stdout } = await run(process.execPath, [CLI, 'estimate', images, '--model', model, '--instance-types', 'g5.xlarge,g6.xlarge', '--probe-images', '0', '--json'], { env, timeout: 120_000 });
    const estimate = JSON.parse(stdout) as Estimate;
    expect(Object.keys(estimate).sort()).toEqual(['images', 'input', 'model', 'notes', 'options', 'region']);
    expect(estimate.images).toBe(3);
    expect(estimate.options.map((entry) => `${entry.instanceType} ${entry.lifecycle}`).sort()).toEqual(['g5.xlarge on-demand', 'g5.xlarge spot', 'g6.xlarge on-demand', 'g6.xlarge spot']);
    expect(estimate.options.find((entry) => entry.instanceType === 'g6.xlarge')?.durationSeconds).toBeNull();

    const table = await run(process.execPath, [CLI, 'run', images, '--model', model, '--estimate'], { env, timeout: 120_000 });
    expect(table.stdout).toMatch(/INSTANCE TYPE\s+LIFECYCLE\s+PRICE\/HOUR/);
    expect(table.stdout).toContain('Local probe: local probe on');
    expect(table.stdout).toContain('NOTE: ');
  });
});
