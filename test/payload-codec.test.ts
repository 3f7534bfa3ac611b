import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { Payload } from '@temporalio/common';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { AesGcmPayloadCodec, encryptingDataConverter, ENCRYPTED_ENCODING, KEY_ID_METADATA } from '../activities/codec/aes-gcm-codec';
import { startCodecServer, type CodecServer } from '../activities/codec/codec-server';
import { defaultKeyId, loadPayloadKeyring, type PayloadKeyring } from '../activities/codec/payload-keys';
import { toFileUri } from '../activities/storage/uri';
import type { ModelVersion } from '../activities/types';
import { registerDetector, sampleFolder, startTestStack, tempDir, type TestStack } from './helpers';

const UI_ORIGIN = 'http://127.0.0.1:8233';
const CODEC_TOKEN = 'codec-test-token';

interface FoundPayload {
  path: string;
  payload: Payload;
}

/**
 * Collects every payload in a history message except those the SDK never passes to codecs:
 * search attributes, headers, and the `patch-data` of patch markers, which hold only the patch
 * id from the workflow code.
 */
function collectPayloads(value: unknown, at: string, found: FoundPayload[]): FoundPayload[] {
  if (typeof value !== 'object' || value === null || value instanceof Uint8Array) return found;
  const record = value as Record<string, unknown>;
  if (record.data instanceof Uint8Array && typeof record.metadata === 'object') {
    found.push({ path: at, payload: record as Payload });
    return found;
  }
  for (const [key, child] of Object.entries(record)) {
    if (key === 'searchAttributes' || key === 'header' || key === 'patch-data') continue;
    collectPayloads(child, `${at}.${key}`, found);
  }
  return found;
}

function metadataText(payload: Payload, name: string): string | undefined {
  const value = payload.metadata?.[name];
  return value === undefined ? undefined : Buffer.from(value).toString('utf8');
}

function toJsonPayload(payload: Payload): { metadata: Record<string, string>; data: string } {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(payload.metadata ?? {})) metadata[name] = Buffer.from(value).toString('base64');
  return { metadata, data: Buffer.from(payload.data ?? new Uint8Array()).toString('base64') };
}

function keyringWith(id: string, key: Buffer): PayloadKeyring {
  return { encryptionKeyId: id, keys: new Map([[id, key]]) };
}

describe('payload encryption', () => {
  const key = randomBytes(32);
  const keyring = loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY: key.toString('base64') })!;
  let stack: TestStack;
  let detector: ModelVersion;
  let plainConnection: Connection;
  let codecServer: CodecServer;

  beforeAll(async () => {
    stack = await startTestStack({ dataConverter: encryptingDataConverter(keyring) });
    detector = await registerDetector(stack.registry);
    plainConnection = await Connection.connect({ address: inject('temporalAddress') });
    codecServer = await startCodecServer({ codec: new AesGcmPayloadCodec(keyring), port: 0, origin: UI_ORIGIN, token: CODEC_TOKEN, log: () => {} });
  });
  afterAll(async () => {
    await codecServer?.close();
    await plainConnection?.close();
    await stack?.stop();
  });

  it('loads keys from the environment', () => {
    expect(keyring.encryptionKeyId).toBe(defaultKeyId(key));
    expect(keyring.encryptionKeyId).toMatch(/^[0-9a-f]{8}$/);
    expect(keyring.keys.get(keyring.encryptionKeyId)?.equals(key)).toBe(true);

    const fromHex = loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY: key.toString('hex'), SKYNEWT_PAYLOAD_KEY_ID: 'prod-2026' })!;
    expect(fromHex.encryptionKeyId).toBe('prod-2026');
    expect(fromHex.keys.get('prod-2026')?.equals(key)).toBe(true);

    const keyFile = path.join(tempDir('keys'), 'key.txt');
    writeFileSync(keyFile, `${key.toString('base64')}\n`);
    expect(loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY_FILE: keyFile })?.encryptionKeyId).toBe(defaultKeyId(key));

    expect(loadPayloadKeyring({})).toBeNull();
    expect(() => loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY: 'c2hvcnQ=' })).toThrow(/Invalid payload key in SKYNEWT_PAYLOAD_KEY: expected 32 bytes/);
    expect(() => loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY: key.toString('hex'), SKYNEWT_PAYLOAD_KEY_FILE: keyFile })).toThrow(/set only one/);
  });

  it('encrypts a batch end to end', async () => {
    const images = ['text.png', 'coins.png', 'camera.png'];
    const folder = sampleFolder(images);
    const { batchId } = await stack.client.startBatch({
      input: folder,
      model: `${detector.name}@${detector.version}`,
      shardSize: 2,
      checkpointEvery: 1,
      taskQueue: stack.gpuTaskQueue,
    });

    // (a) The batch completes, and the client with the codec reads its summary, query and memo.
    const summary = await stack.client.result(batchId);
    expect(summary.status).toBe('completed');
    expect(summary.images).toBe(3);
    expect(summary.imagesFailed).toBe(0);
    expect(summary.output).toBe(`${stack.resultsRoot}/${batchId}`);
    expect((await stack.client.progress(batchId)).status).toBe('completed');
    expect(await stack.client.manifestUri(batchId)).toBe(summary.manifest);
    const manifest = await stack.client.readManifest(summary.manifest);
    expect(manifest.images).toBe(3);

    // (b) The raw history, read without the codec, contains no plaintext input path or image URI.
    const plain = new Client({ connection: plainConnection });
    const history = await plain.workflow.getHandle(batchId).fetchHistory();
    const historyJson = JSON.stringify(history);
    const payloads = collectPayloads(history, 'history', []);
    const decodedTexts = payloads.map(({ payload }) => [
      Buffer.from(payload.data ?? new Uint8Array()).toString('latin1'),
      ...Object.values(payload.metadata ?? {}).map((value) => Buffer.from(value).toString('latin1')),
    ].join('\n'));
    const secrets = [folder, toFileUri(folder), stack.home, ...images, ...images.map((image) => toFileUri(path.join(folder, image)))];
    for (const secret of secrets) {
      expect(historyJson, `history JSON contains ${secret}`).not.toContain(secret);
      expect(historyJson, `history JSON contains base64 of ${secret}`).not.toContain(Buffer.from(secret).toString('base64'));
      for (const text of decodedTexts) expect(text, `a payload contains ${secret}`).not.toContain(secret);
    }

    // Inputs, results, activity inputs and results, and the memo are all encrypted.
    expect(payloads.length).toBeGreaterThan(10);
    const paths = payloads.map((found) => found.path).join('\n');
    expect(paths).toMatch(/workflowExecutionStartedEventAttributes\.input/);
    expect(paths).toMatch(/activityTaskScheduledEventAttributes\.input/);
    expect(paths).toMatch(/activityTaskCompletedEventAttributes\.result/);
    expect(paths).toMatch(/workflowPropertiesModifiedEventAttributes\.upsertedMemo/);
    for (const found of payloads) {
      expect(metadataText(found.payload, 'encoding'), found.path).toBe(ENCRYPTED_ENCODING);
      expect(metadataText(found.payload, KEY_ID_METADATA), found.path).toBe(keyring.encryptionKeyId);
    }
    await expect(plain.workflow.getHandle(batchId).result()).rejects.toThrow(/binary\/encrypted/);

    // (c) The codec server decodes the workflow input for a request with the token.
    const input = history.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0] as Payload;
    expect(input).toBeDefined();
    const decodeRequest = JSON.stringify({ payloads: [toJsonPayload(input)] });
    const decoded = await fetch(`${codecServer.url}/decode`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${CODEC_TOKEN}`, 'x-namespace': 'default', origin: UI_ORIGIN },
      body: decodeRequest,
    });
    expect(decoded.status).toBe(200);
    expect(decoded.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    const decodedBody = (await decoded.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(decodedBody.payloads).toHaveLength(1);
    expect(Buffer.from(decodedBody.payloads[0].metadata.encoding, 'base64').toString()).toBe('json/plain');
    const workflowInput = JSON.parse(Buffer.from(decodedBody.payloads[0].data, 'base64').toString()) as { input: string; batchId: string };
    expect(workflowInput.input).toBe(folder);
    expect(workflowInput.batchId).toBe(batchId);

    // The same request without the token, or with another one, is rejected.
    const anonymous = await fetch(`${codecServer.url}/decode`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: decodeRequest });
    expect(anonymous.status).toBe(401);
    expect(JSON.stringify(await anonymous.json())).not.toContain(folder);
    const wrongToken = await fetch(`${codecServer.url}/decode`, { method: 'POST', headers: { authorization: 'Bearer not-the-token' }, body: decodeRequest });
    expect(wrongToken.status).toBe(401);

    // (d) A codec without the key names the key id the payload needs.
    const otherKey = randomBytes(32);
    const stranger = new AesGcmPayloadCodec(keyringWith(defaultKeyId(otherKey), otherKey));
    await expect(stranger.decode([input])).rejects.toThrow(new RegExp(`key id ${keyring.encryptionKeyId}: no key with that id is configured`));
    const impostor = new AesGcmPayloadCodec(keyringWith(keyring.encryptionKeyId, otherKey));
    await expect(impostor.decode([input])).rejects.toThrow(new RegExp(`key id ${keyring.encryptionKeyId}: authentication failed`));
  });

  it('decodes with a rotated-out key', async () => {
    const oldKeyring = keyringWith('key-2025', randomBytes(32));
    const [encrypted] = await new AesGcmPayloadCodec(oldKeyring).encode([{ metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('{"input":"/data/patients"}') }]);

    const folder = tempDir('keys');
    const keysFile = path.join(folder, 'keys.json');
    writeFileSync(keysFile, JSON.stringify({ 'key-2025': oldKeyring.keys.get('key-2025')!.toString('base64') }));
    const rotated = loadPayloadKeyring({ SKYNEWT_PAYLOAD_KEY: randomBytes(32).toString('hex'), SKYNEWT_PAYLOAD_KEY_ID: 'key-2026', SKYNEWT_PAYLOAD_KEYS_FILE: keysFile })!;
    expect(rotated.encryptionKeyId).toBe('key-2026');
    expect([...rotated.keys.keys()].sort()).toEqual(['key-2025', 'key-2026']);

    const codec = new AesGcmPayloadCodec(rotated);
    const [decoded] = await codec.decode([encrypted]);
    expect(Buffer.from(decoded.data!).toString()).toBe('{"input":"/data/patients"}');
    expect(metadataText(decoded, 'encoding')).toBe('json/plain');
    const [reencrypted] = await codec.encode([decoded]);
    expect(metadataText(reencrypted, KEY_ID_METADATA)).toBe('key-2026');

    // Payloads that were never encrypted pass through decode unchanged.
    const plainPayload: Payload = { metadata: { encoding: Buffer.from('json/plain') }, data: Buffer.from('1') };
    expect(await codec.decode([plainPayload])).toEqual([plainPayload]);
  });

  it('codec server enforces CORS origin', async () => {
    const preflight = await fetch(`${codecServer.url}/decode`, {
      method: 'OPTIONS',
      headers: { origin: UI_ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace,authorization' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    expect(preflight.headers.get('access-control-allow-headers')).toBe('content-type,x-namespace,authorization');
    expect(preflight.headers.get('access-control-allow-methods')).toContain('POST');

    const foreign = await fetch(`${codecServer.url}/decode`, {
      method: 'POST',
      headers: { origin: 'http://evil.example', authorization: `Bearer ${CODEC_TOKEN}` },
      body: JSON.stringify({ payloads: [] }),
    });
    expect(foreign.status).toBe(403);
    expect(foreign.headers.get('access-control-allow-origin')).toBeNull();

    const plainPayload = { metadata: { encoding: Buffer.from('json/plain').toString('base64') }, data: Buffer.from('"hello"').toString('base64') };
    const encoded = await fetch(`${codecServer.url}/encode`, {
      method: 'POST',
      headers: { authorization: `Bearer ${CODEC_TOKEN}` },
      body: JSON.stringify({ payloads: [plainPayload] }),
    });
    expect(encoded.status).toBe(200);
    const encodedBody = (await encoded.json()) as { payloads: { metadata: Record<string, string>; data: string }[] };
    expect(Buffer.from(encodedBody.payloads[0].metadata.encoding, 'base64').toString()).toBe(ENCRYPTED_ENCODING);
    const roundTrip = await fetch(`${codecServer.url}/decode`, { method: 'POST', headers: { authorization: `Bearer ${CODEC_TOKEN}` }, body: JSON.stringify(encodedBody) });
    expect(((await roundTrip.json()) as { payloads: unknown[] }).payloads).toEqual([plainPayload]);

    const invalid = await fetch(`${codecServer.url}/decode`, { method: 'POST', headers: { authorization: `Bearer ${CODEC_TOKEN}` }, body: '{"payloads": 3}' });
    expect(invalid.status).toBe(400);
  });
});
