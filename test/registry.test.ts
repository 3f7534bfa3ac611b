import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { DynamoDBClient, DescribeTableCommand } from '@aws-sdk/client-dynamodb';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { DynamoRegistry, ensureRegistryTable } from '../activities/registry/dynamo-registry';
import { ModelNotFound, ModelVersionConflict } from '../activities/registry/errors';
import { LocalRegistry } from '../activities/registry/local-registry';
import { nextVersion, type ModelRegistry, type RegisterRequest } from '../activities/registry/model-registry';
import { openRegistry } from '../activities/registry/open-registry';
import { sha256Hex } from '../activities/storage/hash';
import { createObjectStore } from '../activities/storage/stores';
import { parseUri, toFileUri } from '../activities/storage/uri';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const MOTO_SERVER = path.resolve(__dirname, '..', '.venv', 'bin', 'moto_server');
const ONNX_PATH = path.resolve(
  __dirname,
  '..',
  'node_modules',
  '@gutenye',
  'ocr-models',
  'assets',
  'ch_ppocr_mobile_v2.0_cls_infer.onnx',
);

let onnx: Buffer;
/** Bytes that differ from the real model, for conflict cases. */
let otherBytes: Buffer;

beforeAll(async () => {
  onnx = await fs.readFile(ONNX_PATH);
  otherBytes = Buffer.concat([onnx, Buffer.from('changed')]);
});

function request(name: string, overrides: Partial<RegisterRequest> = {}): RegisterRequest {
  return {
    name,
    task: 'classification',
    bytes: onnx,
    preprocess: { width: 192, height: 48, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
    labels: ['0', '180'],
    threshold: 0.9,
    createdBy: 'registry-test',
    ...overrides,
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('nextVersion', () => {
  it('counts past the highest integer', () => {
    expect(nextVersion([])).toBe('1');
    expect(nextVersion(['1', '2', '10', 'beta', '3.1'])).toBe('11');
    expect(nextVersion(['beta'])).toBe('1');
    expect(nextVersion(['99999999999999999999'])).toBe('100000000000000000000');
  });
});

/** Defines the checks shared by every ModelRegistry. `prefix` keeps model names unique per implementation. */
function registryContract(label: string, open: () => ModelRegistry, prefix: string): void {
  describe(`${label} contract`, () => {
    it('registers and reads back the artifact', async () => {
      const registry = open();
      const name = `${prefix}-roundtrip`;
      const { model, created } = await registry.register(request(name));
      expect(created).toBe(true);
      expect(model.version).toBe('1');
      expect(model.sha256).toBe(sha256Hex(onnx));
      expect(model.sizeBytes).toBe(onnx.length);
      expect(model.labels).toEqual(['0', '180']);
      expect(model.preprocess.mean).toEqual([0.5, 0.5, 0.5]);
      expect(Number.isNaN(Date.parse(model.createdAt))).toBe(false);

      const stored = await registry.get(name, '1');
      expect(stored).toEqual(model);
      const bytes = await registry.readArtifact(stored);
      expect(bytes.equals(onnx)).toBe(true);
    });

    it('numbers versions after the highest integer', async () => {
      const registry = open();
      const name = `${prefix}-numbering`;
      await registry.register(request(name, { version: '7' }));
      await registry.register(request(name, { version: 'beta' }));
      const { model } = await registry.register(request(name, { bytes: otherBytes }));
      expect(model.version).toBe('8');
    });

    it('same bytes are idempotent', async () => {
      const registry = open();
      const name = `${prefix}-idempotent`;
      const first = await registry.register(request(name, { version: '1.0' }));
      const again = await registry.register(request(name, { version: '1.0' }));
      expect(again.created).toBe(false);
      expect(again.model).toEqual(first.model);
    });

    it('same bytes with other settings are rejected', async () => {
      const registry = open();
      const name = `${prefix}-settings`;
      await registry.register(request(name, { version: '1' }));
      const error = await rejection(registry.register(request(name, { version: '1', threshold: 0.1 })));
      expect(error.name).toBe('ModelVersionConflict');
      expect(error.message).toContain(`${name}@1`);
      expect(error.message).toContain('→ 0.1');
      expect(error.message).toContain('new --version');
    });

    it('other bytes are rejected', async () => {
      const registry = open();
      const name = `${prefix}-conflict`;
      await registry.register(request(name, { version: '1' }));
      const error = await rejection(registry.register(request(name, { version: '1', bytes: otherBytes })));
      expect(error).toBeInstanceOf(ModelVersionConflict);
      expect(error.name).toBe('ModelVersionConflict');
      expect(error.message).toContain(`${name}@1`);
      expect(error.message).toContain(sha256Hex(onnx));
      expect(error.message).toContain(sha256Hex(otherBytes));
      expect(error.message).toContain('--version');
      expect((await registry.readArtifact(await registry.get(name, '1'))).equals(onnx)).toBe(true);
    });

    it('concurrent registers have one winner', async () => {
      const registry = open();
      const name = `${prefix}-race`;
      const outcomes = await Promise.allSettled([
        registry.register(request(name, { version: '1' })),
        registry.register(request(name, { version: '1', bytes: otherBytes })),
        registry.register(request(name, { version: '1' })),
      ]);
      const stored = await registry.get(name, '1');
      const winnerBytes = stored.sha256 === sha256Hex(onnx) ? onnx : otherBytes;
      expect((await registry.readArtifact(stored)).equals(winnerBytes)).toBe(true);

      const created = outcomes.filter((outcome) => outcome.status === 'fulfilled' && outcome.value.created);
      expect(created).toHaveLength(1);
      for (const outcome of outcomes) {
        if (outcome.status === 'rejected') {
          expect((outcome.reason as Error).name).toBe('ModelVersionConflict');
        } else {
          expect(outcome.value.model).toEqual(stored);
        }
      }
    });

    it('concurrent auto versions are distinct', async () => {
      const registry = open();
      const name = `${prefix}-auto-race`;
      const results = await Promise.all([
        registry.register(request(name)),
        registry.register(request(name, { bytes: otherBytes })),
      ]);
      expect(results.map((result) => result.created)).toEqual([true, true]);
      expect(results.map((result) => result.model.version).sort()).toEqual(['1', '2']);
      for (const result of results) {
        const bytes = await registry.readArtifact(await registry.get(name, result.model.version));
        expect(sha256Hex(bytes)).toBe(result.model.sha256);
      }
    });

    it('get without version returns the latest', async () => {
      const registry = open();
      const name = `${prefix}-latest`;
      await registry.register(request(name, { version: '10' }));
      await sleep(5);
      await registry.register(request(name, { version: '9', bytes: otherBytes }));
      const latest = await registry.get(name);
      expect(latest.version).toBe('9');
      expect(latest.sha256).toBe(sha256Hex(otherBytes));
    });

    it('ModelNotFound lists existing versions', async () => {
      const registry = open();
      const name = `${prefix}-missing`;
      await registry.register(request(name, { version: 'a' }));
      await sleep(5);
      await registry.register(request(name, { version: 'b' }));

      const error = await rejection(registry.get(name, 'c'));
      expect(error).toBeInstanceOf(ModelNotFound);
      expect(error.name).toBe('ModelNotFound');
      expect(error.message).toBe(`Model ${name}@c not found. Registered versions of ${name}: a, b.`);

      const none = await rejection(registry.get(`${prefix}-never`));
      expect(none.name).toBe('ModelNotFound');
      expect(none.message).toContain('no versions');
      expect(none.message).toContain('register');
    });

    it('list filters and sorts', async () => {
      const registry = open();
      const first = `${prefix}-list-a`;
      const second = `${prefix}-list-b`;
      await registry.register(request(second));
      await registry.register(request(first, { version: 'x' }));
      await sleep(5);
      await registry.register(request(first, { version: 'y' }));

      expect((await registry.list(first)).map((model) => model.version)).toEqual(['x', 'y']);
      const all = (await registry.list()).map((model) => `${model.name}@${model.version}`);
      expect(all.filter((reference) => reference.startsWith(`${prefix}-list-`))).toEqual([
        `${first}@x`,
        `${first}@y`,
        `${second}@1`,
      ]);
      const names = all.map((reference) => reference.split('@')[0]);
      expect(names).toEqual([...names].sort());
    });

    it('rejects invalid names and versions', async () => {
      const registry = open();
      for (const name of ['', 'Upper', '-dash', 'a/b', 'x'.repeat(65)]) {
        const error = await rejection(registry.register(request(name)));
        expect(error.name, name).toBe('InvalidModelName');
        expect(error.message, name).toContain(JSON.stringify(name));
        expect(error.message, name).toContain('^[a-z0-9][a-z0-9._-]{0,63}$');
      }
      for (const version of ['', '.hidden', 'a b', '../x']) {
        const error = await rejection(registry.register(request(`${prefix}-valid`, { version })));
        expect(error.name, version).toBe('InvalidModelName');
        expect(error.message, version).toContain('^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$');
      }
      expect((await rejection(registry.get('Bad Name'))).name).toBe('InvalidModelName');
      expect((await rejection(registry.get(`${prefix}-valid`, '../x'))).name).toBe('InvalidModelName');
    });

    it('rejects invalid specs', async () => {
      const registry = open();
      const name = `${prefix}-spec`;
      const cases: Partial<RegisterRequest>[] = [
        { threshold: 1.5 },
        { bytes: Buffer.alloc(0) },
        { preprocess: { width: 0, height: 48, mean: [0, 0, 0], std: [1, 1, 1] } },
        { preprocess: { width: 192, height: 48, mean: [0, 0, 0], std: [1, 0, 1] } },
        { createdBy: ' ' },
      ];
      for (const overrides of cases) {
        const error = await rejection(registry.register(request(name, overrides)));
        expect(error.name, JSON.stringify(overrides)).toBe('InvalidModelSpec');
      }
      expect((await rejection(registry.get(name))).name).toBe('ModelNotFound');
    });
  });
}

describe('LocalRegistry', () => {
  let root: string;

  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'skynewt-registry-'));
  });

  afterAll(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  registryContract('LocalRegistry', () => new LocalRegistry(root), 'local');

  it('stores model.onnx and model.json', async () => {
    const registry = new LocalRegistry(root);
    const { model } = await registry.register(request('layout', { version: '3' }));
    const folder = path.join(root, 'layout', '3');
    expect((await fs.readdir(folder)).sort()).toEqual(['model.json', 'model.onnx']);
    expect(model.artifactUri).toBe(toFileUri(path.join(folder, 'model.onnx')));
    expect(JSON.parse(await fs.readFile(path.join(folder, 'model.json'), 'utf8'))).toEqual(model);
    expect((await fs.readdir(path.join(root, 'layout'))).filter((entry) => entry.startsWith('.'))).toEqual([]);
  });

  it('missing artifact rejects NotFound', async () => {
    const registry = new LocalRegistry(root);
    const { model } = await registry.register(request('lost', { version: '1' }));
    await fs.rm(path.join(root, 'lost', '1', 'model.onnx'));
    expect((await rejection(registry.readArtifact(model))).name).toBe('NotFound');
  });
});

describe('openRegistry', () => {
  it('defaults to a local folder', () => {
    const registry = openRegistry({});
    expect(registry).toBeInstanceOf(LocalRegistry);
    expect((registry as LocalRegistry).root).toBe(path.resolve('.skynewt', 'registry'));
  });

  it('honors SKYNEWT_HOME and SKYNEWT_REGISTRY_DIR', () => {
    const home = openRegistry({ SKYNEWT_HOME: 'state' }) as LocalRegistry;
    expect(home.root).toBe(path.resolve('state', 'registry'));
    const dir = openRegistry({ SKYNEWT_HOME: 'state', SKYNEWT_REGISTRY_DIR: '/srv/models' }) as LocalRegistry;
    expect(dir.root).toBe('/srv/models');
  });

  it('requires SKYNEWT_ARTIFACT_URI with a table', () => {
    expect(() => openRegistry({ SKYNEWT_REGISTRY_TABLE: 'models' })).toThrow('SKYNEWT_ARTIFACT_URI is missing');
    expect(() => openRegistry({ SKYNEWT_REGISTRY_TABLE: 'models', SKYNEWT_ARTIFACT_URI: 'http://x/y' })).toThrow(
      'Invalid SKYNEWT_ARTIFACT_URI',
    );
  });

  it('opens DynamoRegistry with a table', () => {
    const dynamo = new DynamoDBClient({ region: 'us-east-1', endpoint: 'http://127.0.0.1:1' });
    const registry = openRegistry(
      { SKYNEWT_REGISTRY_TABLE: 'models', SKYNEWT_ARTIFACT_URI: 's3://bucket/models' },
      { dynamo, store: createObjectStore() },
    );
    expect(registry).toBeInstanceOf(DynamoRegistry);
    dynamo.destroy();
  });
});

/** Starts moto on a free 127.0.0.1 port unless SKYNEWT_MOTO_ENDPOINT names a running server. */
async function startMoto(): Promise<{ endpoint: string; stop: () => Promise<void> }> {
  const external = process.env.SKYNEWT_MOTO_ENDPOINT;
  if (external) {
    return { endpoint: external, stop: async () => {} };
  }

  const port = await new Promise<number>((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
  const child: ChildProcess = spawn(MOTO_SERVER, ['-H', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  };

  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      throw new Error(`moto_server exited with code ${child.exitCode} before it accepted connections`);
    }
    try {
      await fetch(`${endpoint}/moto-api/`);
      return { endpoint, stop };
    } catch {
      await sleep(200);
    }
  }
  await stop();
  throw new Error(`moto_server did not accept connections on ${endpoint} within 30 s`);
}

describe('DynamoRegistry', () => {
  let moto: { endpoint: string; stop: () => Promise<void> };
  let dynamo: DynamoDBClient;
  let s3: S3Client;
  const suffix = Date.now().toString(36);
  const table = `skynewt-models-${suffix}`;
  const bucket = `skynewt-registry-${suffix}`;
  const artifactPrefix = `s3://${bucket}/models`;
  /** Counts Query and Scan pages, which are forced to one item each to exercise pagination. */
  const pages = { Query: 0, Scan: 0 };

  beforeAll(async () => {
    moto = await startMoto();
    const common = {
      endpoint: moto.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    };
    dynamo = new DynamoDBClient(common);
    dynamo.middlewareStack.add(
      (next, context) => async (args) => {
        const command = context.commandName?.replace(/Command$/, '');
        if (command === 'Query' || command === 'Scan') {
          (args.input as { Limit?: number }).Limit = 1;
          pages[command]++;
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    s3 = new S3Client({ ...common, forcePathStyle: true });
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    await ensureRegistryTable(dynamo, table);
  }, 60_000);

  afterAll(async () => {
    dynamo?.destroy();
    s3?.destroy();
    await moto?.stop();
  });

  const open = () => new DynamoRegistry({ client: dynamo, table, store: createObjectStore({ s3 }), artifactPrefix });

  registryContract('DynamoRegistry', open, 'dynamo');

  it('ensureRegistryTable is idempotent', async () => {
    await ensureRegistryTable(dynamo, table);
    const described = await dynamo.send(new DescribeTableCommand({ TableName: table }));
    expect(described.Table?.TableStatus).toBe('ACTIVE');
    expect(described.Table?.KeySchema).toEqual([
      { AttributeName: 'name', KeyType: 'HASH' },
      { AttributeName: 'version', KeyType: 'RANGE' },
    ]);
    expect(described.Table?.BillingModeSummary?.BillingMode).toBe('PAY_PER_REQUEST');
  });

  it('stores artifacts under prefix and sha256', async () => {
    const registry = open();
    const { model } = await registry.register(request('artifact', { version: '2' }));
    const sha256 = sha256Hex(onnx);
    expect(model.artifactUri).toBe(`${artifactPrefix}/artifact/2/${sha256}.onnx`);
    expect(parseUri(model.artifactUri)).toEqual({ scheme: 's3', bucket, key: `models/artifact/2/${sha256}.onnx` });
    expect(await createObjectStore({ s3 }).exists(model.artifactUri)).toBe(true);
  });

  it('list and get paginate', async () => {
    const before = { ...pages };
    const registry = open();
    const name = 'paged';
    for (const version of ['1', '2', '3']) {
      await registry.register(request(name, { version }));
    }
    expect((await registry.list(name)).map((model) => model.version)).toEqual(['1', '2', '3']);
    expect((await registry.get(name)).version).toBe('3');
    // Without pagination each call would stop after one page and see one version.
    expect(pages.Query - before.Query).toBeGreaterThanOrEqual(6);

    const all = await registry.list();
    expect(all.filter((model) => model.name === name)).toHaveLength(3);
    expect(pages.Scan - before.Scan).toBeGreaterThanOrEqual(all.length);
  });
});
