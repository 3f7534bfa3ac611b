import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  CreateBucketCommand,
  HeadObjectCommand,
  PutBucketVersioningCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { FileStore } from '../activities/storage/file-store';
import { sha256Hex } from '../activities/storage/hash';
import type { ObjectStore } from '../activities/storage/object-store';
import { S3Store } from '../activities/storage/s3-store';
import { createObjectStore, createS3Client } from '../activities/storage/stores';
import { joinUri, parseUri, toFileUri } from '../activities/storage/uri';

process.env.AWS_EC2_METADATA_DISABLED = 'true';

const MOTO_SERVER = path.resolve(__dirname, '..', '.venv', 'bin', 'moto_server');

async function collect(store: ObjectStore, prefixUri: string): Promise<string[]> {
  const uris: string[] = [];
  for await (const entry of store.list(prefixUri)) {
    uris.push(entry.uri);
  }
  return uris;
}

async function readAll(chunks: AsyncIterable<Buffer>): Promise<Buffer[]> {
  const all: Buffer[] = [];
  for await (const chunk of chunks) all.push(chunk);
  return all;
}

function localPath(uri: string): string {
  const parsed = parseUri(uri);
  if (parsed.scheme !== 'file') {
    throw new Error(`expected a file URI, got ${uri}`);
  }
  return parsed.path;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected the promise to reject');
}

describe('parseUri', () => {
  it('parses s3 URIs', () => {
    expect(parseUri('s3://bucket/key/prefix')).toEqual({ scheme: 's3', bucket: 'bucket', key: 'key/prefix' });
    expect(parseUri('s3://bucket')).toEqual({ scheme: 's3', bucket: 'bucket', key: '' });
    expect(parseUri('s3://bucket/')).toEqual({ scheme: 's3', bucket: 'bucket', key: '' });
    expect(parseUri('s3://bucket/a dir/%20x/')).toEqual({ scheme: 's3', bucket: 'bucket', key: 'a dir/%20x/' });
  });

  it('parses file URIs and plain paths', () => {
    expect(parseUri('file:///abs/path')).toEqual({ scheme: 'file', path: '/abs/path' });
    expect(parseUri('file:///abs/with%20space')).toEqual({ scheme: 'file', path: '/abs/with space' });
    expect(parseUri('file://localhost/abs')).toEqual({ scheme: 'file', path: '/abs' });
    expect(parseUri('/abs/plain')).toEqual({ scheme: 'file', path: '/abs/plain' });
    expect(parseUri('relative/dir')).toEqual({ scheme: 'file', path: path.join(process.cwd(), 'relative/dir') });
  });

  it('rejects unsupported values', () => {
    for (const value of ['', '   ', 'http://example.com/x', 's3://', 's3:///key', 'file://host/path']) {
      expect(() => parseUri(value), value).toThrow(JSON.stringify(value));
      expect(() => parseUri(value), value).toThrow('s3://bucket/key, file:///absolute/path, or a local path');
    }
  });
});

describe('joinUri', () => {
  it('joins s3 segments with single slashes', () => {
    expect(joinUri('s3://b/p', 'x', 'y.json')).toBe('s3://b/p/x/y.json');
    expect(joinUri('s3://b/p/', '/x/', '//y')).toBe('s3://b/p/x/y');
    expect(joinUri('s3://b', 'x')).toBe('s3://b/x');
    expect(joinUri('s3://b/', 'x', '')).toBe('s3://b/x');
    expect(joinUri('s3://b/p', 'dir/')).toBe('s3://b/p/dir/');
    expect(joinUri('s3://b/p/')).toBe('s3://b/p/');
  });

  it('joins file URIs and plain paths', () => {
    expect(joinUri('file:///tmp/out/', '/a/', 'b.txt')).toBe('file:///tmp/out/a/b.txt');
    expect(joinUri('/tmp/out', 'a b')).toBe('file:///tmp/out/a%20b');
    expect(joinUri('out', 'x')).toBe(toFileUri(path.join(process.cwd(), 'out', 'x')));
    expect(joinUri('file:///tmp/out', 'dir/')).toBe('file:///tmp/out/dir/');
  });
});

describe('toFileUri', () => {
  it('round trips unusual paths', () => {
    for (const local of ['/tmp/a b/c#d?e%f.png', '/tmp/ünï/x']) {
      const uri = toFileUri(local);
      expect(uri.startsWith('file:///')).toBe(true);
      expect(parseUri(uri)).toEqual({ scheme: 'file', path: local });
    }
  });
});

describe('sha256Hex', () => {
  it('hashes bytes and strings', () => {
    expect(sha256Hex('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(sha256Hex(Buffer.from('abc'))).toBe(sha256Hex('abc'));
  });
});

describe('FileStore', () => {
  const store = new FileStore();
  let root: string;

  beforeAll(async () => {
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'skynewt-files-'));
  });

  afterAll(async () => {
    await fs.rm(root, { recursive: true, force: true });
  });

  it('round trips bytes with a sha256 etag', async () => {
    const uri = toFileUri(path.join(root, 'round', 'deep', 'a.bin'));
    const body = Buffer.from([0, 1, 2, 255]);
    await store.put(uri, body);
    const stored = await store.get(uri);
    expect(stored.body.equals(body)).toBe(true);
    expect(stored.etag).toBe(`sha256:${sha256Hex(body)}`);
    expect(stored.versionId).toBeUndefined();
  });

  it('accepts plain paths and strings', async () => {
    const local = path.join(root, 'plain', 'note.txt');
    await store.put(local, 'hello');
    expect((await store.get(toFileUri(local))).body.toString('utf8')).toBe('hello');
  });

  it('replaces an existing object', async () => {
    const uri = toFileUri(path.join(root, 'replace.txt'));
    await store.put(uri, 'one');
    await store.put(uri, 'two');
    expect((await store.get(uri)).body.toString()).toBe('two');
    expect((await fs.readdir(root)).filter((name) => name.startsWith('.skynewt-tmp-'))).toEqual([]);
  });

  it('get on missing rejects NotFound', async () => {
    const uri = toFileUri(path.join(root, 'missing.bin'));
    const error = await rejection(store.get(uri));
    expect(error.name).toBe('NotFound');
    expect(error.message).toContain(uri);
    expect((await rejection(store.stream(uri))).name).toBe('NotFound');
  });

  it('streams a large object in chunks', async () => {
    const uri = toFileUri(path.join(root, 'large.bin'));
    const body = Buffer.alloc(300_000, 7);
    await store.put(uri, body);
    const chunks = await readAll(await store.stream(uri));
    expect(chunks.length).toBeGreaterThan(1);
    expect(Buffer.concat(chunks).equals(body)).toBe(true);
  });

  it('list is recursive and sorted', async () => {
    const base = path.join(root, 'tree');
    for (const name of ['b.txt', 'a/z.txt', 'a.txt', 'a/b/c.txt', 'A.txt', 'a b.txt']) {
      await store.put(path.join(base, name), name);
    }
    await fs.writeFile(path.join(base, 'a', '.skynewt-tmp-123-abc'), 'partial');
    await fs.symlink(path.join(base, 'a'), path.join(base, 'loop'));

    const uris = await collect(store, toFileUri(base));
    expect(uris).toEqual([...uris].sort());
    expect(uris.map((uri) => path.relative(base, localPath(uri)))).toEqual([
      'A.txt',
      'a b.txt',
      'a.txt',
      'a/b/c.txt',
      'a/z.txt',
      'b.txt',
    ]);

    const sizes: number[] = [];
    for await (const entry of store.list(base)) {
      sizes.push(entry.size);
    }
    expect(sizes).toEqual([5, 7, 5, 9, 7, 5]);
  });

  it('list of a missing folder is empty', async () => {
    expect(await collect(store, path.join(root, 'nothing-here'))).toEqual([]);
  });

  it('exists and delete', async () => {
    const uri = toFileUri(path.join(root, 'gone.txt'));
    await store.put(uri, 'x');
    expect(await store.exists(uri)).toBe(true);
    expect(await store.exists(toFileUri(root))).toBe(false);
    await store.delete(uri);
    expect(await store.exists(uri)).toBe(false);
    await store.delete(uri);
  });

  it('put with an aborted signal writes nothing', async () => {
    const folder = path.join(root, 'aborted');
    const controller = new AbortController();
    controller.abort();
    const error = await rejection(store.put(path.join(folder, 'x.bin'), 'data', { signal: controller.signal }));
    expect(error.name).toBe('AbortError');
    expect(await fs.readdir(folder)).toEqual([]);
  });

  it('rejects s3 URIs', async () => {
    await expect(store.get('s3://bucket/key')).rejects.toThrow('only handles file:// URIs');
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
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  await stop();
  throw new Error(`moto_server did not accept connections on ${endpoint} within 30 s`);
}

describe('S3Store', () => {
  let moto: { endpoint: string; stop: () => Promise<void> };
  let client: S3Client;
  let store: S3Store;
  const bucket = `skynewt-storage-${Date.now()}`;

  beforeAll(async () => {
    moto = await startMoto();
    client = new S3Client({
      endpoint: moto.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      forcePathStyle: true,
    });
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    store = new S3Store(client);
  }, 60_000);

  afterAll(async () => {
    client?.destroy();
    await moto?.stop();
  });

  it('round trips bytes with metadata', async () => {
    const uri = `s3://${bucket}/round/a b.bin`;
    const body = Buffer.from([0, 1, 2, 255]);
    await store.put(uri, body, { contentType: 'application/x-test', metadata: { origin: 'unit' } });

    const stored = await store.get(uri);
    expect(stored.body.equals(body)).toBe(true);
    expect(stored.etag).toBe(createHash('md5').update(body).digest('hex'));

    const head = await client.send(new HeadObjectCommand({ Bucket: bucket, Key: 'round/a b.bin' }));
    expect(head.ContentType).toBe('application/x-test');
    expect(head.Metadata).toEqual({ origin: 'unit' });
  });

  it('returns the version id of versioned buckets', async () => {
    const versioned = `${bucket}-versioned`;
    await client.send(new CreateBucketCommand({ Bucket: versioned }));
    await client.send(
      new PutBucketVersioningCommand({ Bucket: versioned, VersioningConfiguration: { Status: 'Enabled' } }),
    );
    await store.put(`s3://${versioned}/v.txt`, 'v1');
    const stored = await store.get(`s3://${versioned}/v.txt`);
    expect(stored.versionId).toMatch(/.+/);
  });

  it('get on missing rejects NotFound', async () => {
    const uri = `s3://${bucket}/missing.bin`;
    const error = await rejection(store.get(uri));
    expect(error.name).toBe('NotFound');
    expect(error.message).toContain(uri);
    expect((await rejection(store.stream(uri))).name).toBe('NotFound');
  });

  it('streams an object', async () => {
    const uri = `s3://${bucket}/stream/large.bin`;
    const body = Buffer.alloc(300_000, 9);
    await store.put(uri, body);
    expect(Buffer.concat(await readAll(await store.stream(uri))).equals(body)).toBe(true);
  });

  it('list treats the prefix as a folder', async () => {
    for (const key of ['p/b.txt', 'p/a/c.txt', 'p/a.txt', 'p2/x.txt', 'p']) {
      await store.put(`s3://${bucket}/${key}`, key);
    }
    // put() rejects keys ending in '/', so the console-style folder marker is written directly.
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: 'p/folder/', Body: Buffer.alloc(0) }));

    const expected = [`s3://${bucket}/p/a.txt`, `s3://${bucket}/p/a/c.txt`, `s3://${bucket}/p/b.txt`];
    expect(await collect(store, `s3://${bucket}/p`)).toEqual(expected);
    expect(await collect(store, `s3://${bucket}/p/`)).toEqual(expected);
    expect(await collect(store, `s3://${bucket}/none`)).toEqual([]);

    const entries = [];
    for await (const entry of store.list(`s3://${bucket}/p2`)) {
      entries.push(entry);
    }
    expect(entries).toEqual([
      { uri: `s3://${bucket}/p2/x.txt`, size: 8, etag: createHash('md5').update('p2/x.txt').digest('hex') },
    ]);
  });

  it('list follows continuation tokens', async () => {
    const paged = new S3Client({
      endpoint: moto.endpoint,
      region: 'us-east-1',
      credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
      forcePathStyle: true,
    });
    // Two keys per page, so five keys take three ListObjectsV2 calls.
    let calls = 0;
    paged.middlewareStack.add(
      (next) => async (args) => {
        const input = args.input as { MaxKeys?: number; Prefix?: string };
        if (input.Prefix === 'paged/') {
          input.MaxKeys = 2;
          calls++;
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const keys = ['paged/1', 'paged/2', 'paged/3', 'paged/4', 'paged/5'];
    for (const key of keys) {
      await store.put(`s3://${bucket}/${key}`, key);
    }
    expect(await collect(new S3Store(paged), `s3://${bucket}/paged`)).toEqual(keys.map((key) => `s3://${bucket}/${key}`));
    expect(calls).toBe(3);
    paged.destroy();
  });

  it('exists and delete', async () => {
    const uri = `s3://${bucket}/gone.txt`;
    await store.put(uri, 'x');
    expect(await store.exists(uri)).toBe(true);
    await store.delete(uri);
    expect(await store.exists(uri)).toBe(false);
    await store.delete(uri);
  });

  it('put with an aborted signal rejects', async () => {
    const controller = new AbortController();
    controller.abort();
    const uri = `s3://${bucket}/aborted.txt`;
    const error = await rejection(store.put(uri, 'x', { signal: controller.signal }));
    expect(error.name).toBe('AbortError');
    expect(await store.exists(uri)).toBe(false);
  });

  it('rejects bucket-only and file URIs', async () => {
    await expect(store.get(`s3://${bucket}`)).rejects.toThrow('not an object key');
    await expect(store.get('/tmp/x')).rejects.toThrow('only handles s3:// URIs');
  });

  it('createObjectStore routes by scheme', async () => {
    const routed = createObjectStore({ s3: client });
    const local = await fs.mkdtemp(path.join(os.tmpdir(), 'skynewt-routed-'));
    try {
      await routed.put(`s3://${bucket}/routed.txt`, 's3 body');
      await routed.put(path.join(local, 'routed.txt'), 'file body');
      expect((await routed.get(`s3://${bucket}/routed.txt`)).body.toString()).toBe('s3 body');
      expect((await routed.get(toFileUri(path.join(local, 'routed.txt')))).body.toString()).toBe('file body');
      expect(await collect(routed, local)).toEqual([toFileUri(path.join(local, 'routed.txt'))]);
      await expect(routed.get('http://example.com/x')).rejects.toThrow('scheme http:// is not supported');
    } finally {
      await fs.rm(local, { recursive: true, force: true });
    }
  });

  it('createS3Client reads the endpoint from the environment', async () => {
    const names = ['AWS_ENDPOINT_URL_S3', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION'] as const;
    const saved = names.map((name) => process.env[name]);
    Object.assign(process.env, {
      AWS_ENDPOINT_URL_S3: moto.endpoint,
      AWS_ACCESS_KEY_ID: 'test',
      AWS_SECRET_ACCESS_KEY: 'test',
      AWS_REGION: 'us-east-1',
    });
    const fromEnv = createS3Client();
    // Stops the request before it is sent if the SDK ever ignored the endpoint variable.
    const hosts: string[] = [];
    fromEnv.middlewareStack.add(
      (next) => async (args) => {
        const request = args.request as { hostname: string; port?: number; path: string };
        hosts.push(`${request.hostname}:${request.port}`);
        if (`http://${request.hostname}:${request.port}` !== moto.endpoint) {
          throw new Error(`request to ${request.hostname} instead of ${moto.endpoint}`);
        }
        return next(args);
      },
      { step: 'finalizeRequest' },
    );
    try {
      expect(fromEnv.config.forcePathStyle).toBe(true);
      await new S3Store(fromEnv).put(`s3://${bucket}/from-env.txt`, 'env');
      expect(hosts).toEqual([new URL(moto.endpoint).host]);
      expect((await store.get(`s3://${bucket}/from-env.txt`)).body.toString()).toBe('env');
    } finally {
      fromEnv.destroy();
      names.forEach((name, index) => {
        if (saved[index] === undefined) {
          delete process.env[name];
        } else {
          process.env[name] = saved[index];
        }
      });
    }
  });
});
