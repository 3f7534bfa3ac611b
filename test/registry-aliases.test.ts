import { promises as fs } from 'node:fs';
import path from 'node:path';
import { DynamoDBClient, ScanCommand } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { DynamoRegistry, ensureRegistryTable } from '../activities/registry/dynamo-registry';
import { LocalRegistry } from '../activities/registry/local-registry';
import type { ModelRegistry, RegisterRequest } from '../activities/registry/model-registry';
import { createObjectStore } from '../activities/storage/stores';
import { promoteModel } from '../cli/model-commands';
import { motoS3, registerDetector, sampleFolder, startTestStack, tempDir, type TestStack } from './helpers';

const ONNX_PATH = path.resolve(__dirname, '..', 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');

let onnx: Buffer;
beforeAll(async () => {
  onnx = await fs.readFile(ONNX_PATH);
});

function request(name: string, version: string, threshold = 0.9): RegisterRequest {
  return {
    name,
    version,
    task: 'classification',
    bytes: onnx,
    preprocess: { width: 192, height: 48, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
    labels: ['0', '180'],
    threshold,
    createdBy: 'alias-test',
  };
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the promise to reject');
}

function aliasContract(label: string, open: () => ModelRegistry, prefix: string): void {
  describe(`${label} aliases`, () => {
    it('promotes and resolves name@alias', async () => {
      const registry = open();
      const name = `${prefix}-promote`;
      await registry.register(request(name, '1'));
      await registry.register(request(name, '2', 0.8));

      const first = await registry.promote(name, '1', 'production', { reason: 'passed evaluation', by: 'alice@host' });
      expect(first).toMatchObject({ name, alias: 'production', version: '1', previousVersion: null, reason: 'passed evaluation', by: 'alice@host' });
      expect(Date.parse(first.at)).not.toBeNaN();

      const resolved = await registry.resolve(name, 'production');
      expect(resolved.model.version).toBe('1');
      expect(resolved.alias).toBe('production');
      expect((await registry.get(name, 'production')).version).toBe('1');
      expect((await registry.resolve(name, '2')).alias).toBeUndefined();

      const second = await registry.promote(name, '2', 'production', { reason: 'better recall', by: 'bob@host' });
      expect(second.previousVersion).toBe('1');
      await registry.promote(name, '1', 'staging', { reason: 'canary', by: 'bob@host' });
      expect((await registry.get(name, 'production')).version).toBe('2');

      const history = await registry.history(name);
      expect(history.map((entry) => `${entry.alias}:${entry.version}`)).toEqual(['production:1', 'production:2', 'staging:1']);
      expect(history.map((entry) => entry.reason)).toEqual(['passed evaluation', 'better recall', 'canary']);

      const aliases = await registry.aliases(name);
      expect(aliases.map((entry) => `${entry.alias}:${entry.version}`)).toEqual(['production:2', 'staging:1']);
    });

    it('keeps aliases out of version lists', async () => {
      const registry = open();
      const name = `${prefix}-listing`;
      await registry.register(request(name, '1'));
      await registry.promote(name, '1', 'production', { reason: 'first', by: 'test' });

      expect((await registry.list(name)).map((model) => model.version)).toEqual(['1']);
      const all = (await registry.list()).filter((model) => model.name === name);
      expect(all.map((model) => model.version)).toEqual(['1']);
      expect((await registry.get(name)).version).toBe('1');

      const next = await registry.register({ ...request(name, '1'), version: undefined, threshold: 0.5 });
      expect(next.model.version).toBe('2');
    });

    it('rejects unknown versions and aliases', async () => {
      const registry = open();
      const name = `${prefix}-unknown`;
      await registry.register(request(name, '1'));

      const missingVersion = await rejection(registry.promote(name, '9', 'production', { reason: 'typo', by: 'test' }));
      expect(missingVersion.name).toBe('ModelNotFound');
      expect(missingVersion.message).toContain(`${name}@9 not found`);

      const missingAlias = await rejection(registry.get(name, 'production'));
      expect(missingAlias.name).toBe('ModelNotFound');
      expect(await registry.history(name)).toEqual([]);
    });

    it('rejects names shared by aliases and versions', async () => {
      const registry = open();
      const name = `${prefix}-collide`;
      await registry.register(request(name, 'beta'));
      await registry.register(request(name, '1', 0.5));

      const aliasIsVersion = await rejection(registry.promote(name, '1', 'beta', { reason: 'clash', by: 'test' }));
      expect(aliasIsVersion.name).toBe('ModelAliasConflict');

      await registry.promote(name, '1', 'production', { reason: 'ok', by: 'test' });
      const versionIsAlias = await rejection(registry.register(request(name, 'production', 0.4)));
      expect(versionIsAlias.name).toBe('ModelAliasConflict');
      expect(versionIsAlias.message).toContain('production is an alias');
    });

    it('validates alias, reason and user', async () => {
      const registry = open();
      const name = `${prefix}-invalid`;
      await registry.register(request(name, '1'));

      expect((await rejection(registry.promote(name, '1', '7', { reason: 'x', by: 'test' }))).name).toBe('InvalidModelName');
      expect((await rejection(registry.promote(name, '1', 'Prod', { reason: 'x', by: 'test' }))).name).toBe('InvalidModelName');
      expect((await rejection(registry.promote(name, '1', 'production', { reason: ' ', by: 'test' }))).name).toBe('InvalidModelSpec');
      expect((await rejection(registry.promote(name, '1', 'production', { reason: 'x', by: '' }))).name).toBe('InvalidModelSpec');
    });

    it('promotes from the command line', async () => {
      const registry = open();
      const name = `${prefix}-cli`;
      await registry.register(request(name, '3'));
      await registry.promote(name, '3', 'staging', { reason: 'canary', by: 'test' });

      const promotion = await promoteModel(registry, `${name}@staging`, { alias: 'production', reason: 'canary held' }, { SKYNEWT_USER: 'carol@ci' });
      expect(promotion).toMatchObject({ version: '3', alias: 'production', by: 'carol@ci', reason: 'canary held' });

      const bare = await rejection(promoteModel(registry, name, { alias: 'production', reason: 'x' }, {}));
      expect(bare.name).toBe('UsageError');
    });
  });
}

describe('LocalRegistry', () => {
  const root = path.join(tempDir('alias-registry'), 'registry');
  aliasContract('LocalRegistry', () => new LocalRegistry(root), 'local');

  it('appends promotions as JSON lines', async () => {
    const registry = new LocalRegistry(root);
    await registry.register(request('local-file', '1'));
    await registry.promote('local-file', '1', 'production', { reason: 'first', by: 'test' });
    await registry.promote('local-file', '1', 'production', { reason: 'again', by: 'test' });

    const lines = (await fs.readFile(path.join(root, 'local-file', 'promotions.jsonl'), 'utf8')).trim().split('\n');
    expect(lines.map((line) => (JSON.parse(line) as { reason: string }).reason)).toEqual(['first', 'again']);
  });
});

describe('DynamoRegistry', () => {
  const table = `skynewt-aliases-${Date.now()}`;
  const bucket = `skynewt-aliases-${Date.now()}`;
  let dynamo: DynamoDBClient;

  beforeAll(async () => {
    dynamo = new DynamoDBClient({ endpoint: inject('motoEndpoint'), region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } });
    await ensureRegistryTable(dynamo, table);
    await motoS3().send(new CreateBucketCommand({ Bucket: bucket }));
  });
  afterAll(() => dynamo?.destroy());

  const open = () => new DynamoRegistry({ client: dynamo, table, store: createObjectStore({ s3: motoS3() }), artifactPrefix: `s3://${bucket}/models` });
  aliasContract('DynamoRegistry', open, 'dynamo');

  it('stores pointer and history items beside versions', async () => {
    const registry = open();
    await registry.register(request('dynamo-items', '1'));
    await registry.promote('dynamo-items', '1', 'production', { reason: 'first', by: 'test' });
    await registry.promote('dynamo-items', '1', 'production', { reason: 'again', by: 'test' });

    const scan = await dynamo.send(new ScanCommand({ TableName: table }));
    const keys = (scan.Items ?? []).filter((item) => item.name?.S === 'dynamo-items').map((item) => item.version?.S ?? '');
    expect(keys.filter((key) => key === '#alias#production')).toHaveLength(1);
    expect(keys.filter((key) => key.startsWith('#history#'))).toHaveLength(2);
    const pointer = (scan.Items ?? []).find((item) => item.version?.S === '#alias#production' && item.name?.S === 'dynamo-items');
    expect(pointer?.revision?.N).toBe('2');
  });

  it('serializes concurrent promotes', async () => {
    const registry = open();
    await registry.register(request('dynamo-race', '1'));
    await registry.register(request('dynamo-race', '2', 0.5));
    await Promise.all([
      registry.promote('dynamo-race', '1', 'production', { reason: 'a', by: 'test' }),
      registry.promote('dynamo-race', '2', 'production', { reason: 'b', by: 'test' }),
    ]);
    const history = await registry.history('dynamo-race');
    expect(history).toHaveLength(2);
    // Exactly one promote saw the alias as new; the other saw the winner's version.
    expect(history.filter((entry) => entry.previousVersion === null)).toHaveLength(1);
  });
});

describe('batch pinned by alias', () => {
  let stack: TestStack;

  beforeAll(async () => {
    stack = await startTestStack();
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it('keeps the version resolved at start', async () => {
    const pinned = await registerDetector(stack.registry);
    const { model: other } = await stack.registry.register({
      ...request(pinned.name, 'v5'),
      task: pinned.task,
      bytes: await stack.registry.readArtifact(pinned),
      preprocess: pinned.preprocess,
      labels: pinned.labels,
      threshold: 0.5,
    });
    await stack.registry.promote(pinned.name, pinned.version, 'production', { reason: 'baseline', by: 'test' });

    const { batchId } = await stack.client.startBatch({
      input: sampleFolder(4),
      model: `${pinned.name}@production`,
      shardSize: 1,
      maxConcurrentShards: 1,
      taskQueue: stack.gpuTaskQueue,
    });
    let progress = await stack.client.progress(batchId);
    for (let tries = 0; tries < 300 && progress.status === 'starting'; tries++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      progress = await stack.client.progress(batchId);
    }
    expect(progress.status).toBe('running');
    await stack.registry.promote(pinned.name, other.version, 'production', { reason: 'mid-batch change', by: 'test' });
    expect((await stack.client.progress(batchId)).shardsDone).toBeLessThan(4);

    const summary = await stack.client.result(batchId);
    expect(summary.model.version).toBe(pinned.version);
    const manifest = await stack.client.manifest(batchId);
    expect(manifest.model.version).toBe(pinned.version);
    expect(manifest.model.resolvedAlias).toBe('production');
    const description = await stack.client.handle(batchId).describe();
    expect(description.memo?.modelAlias).toBe('production');
    expect(description.memo?.model).toBe(`${pinned.name}@${pinned.version}`);
    expect((await stack.registry.get(pinned.name, 'production')).version).toBe('v5');
  });
});
