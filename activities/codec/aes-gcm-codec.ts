/**
 * A Temporal PayloadCodec that encrypts each payload, metadata included, with AES-256-GCM. The
 * SDK (1.24) runs codecs on every payload it sends to or reads from the server except search
 * attributes, headers and the patch ids of `patched()` markers. So the server stores only
 * ciphertext for workflow and activity inputs and results, heartbeat details, queries, signals
 * and memos.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
import type { PayloadKeyring } from './payload-keys';

/** `encoding` metadata of an encrypted payload. */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
/** Metadata key that names the key id a payload was encrypted with. */
export const KEY_ID_METADATA = 'encryption-key-id';

/** First byte of the encrypted data; a new layout gets a new version. */
const FORMAT_VERSION = 1;
const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A payload that cannot be decrypted: a missing or unknown key id, a wrong key, or altered data. */
export class PayloadDecryptionError extends Error {
  constructor(message: string, readonly keyId: string | null) {
    super(message);
    this.name = 'PayloadDecryptionError';
  }
}

/**
 * Encrypts payloads with the keyring's encryption key and decrypts with any key in the keyring.
 * Payloads whose encoding is not `binary/encrypted` pass through `decode` unchanged, so
 * histories written before encryption was switched on stay readable.
 *
 * Encrypted data layout: version (1 byte) || IV (12 bytes) || ciphertext || GCM tag (16 bytes).
 * The plaintext is the original payload: a 4-byte big-endian length, its metadata as JSON with
 * base64 values, then its data. The key id is authenticated as additional data, so a payload
 * relabelled with another key id fails to decrypt.
 */
export class AesGcmPayloadCodec implements PayloadCodec {
  constructor(private readonly keyring: PayloadKeyring) {
    const key = keyring.keys.get(keyring.encryptionKeyId);
    if (key === undefined) throw new Error(`Payload keyring has no key for its encryption key id ${keyring.encryptionKeyId}.`);
  }

  get encryptionKeyId(): string {
    return this.keyring.encryptionKeyId;
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => this.encrypt(payload));
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((payload) => this.decrypt(payload));
  }

  private encrypt(payload: Payload): Payload {
    const keyId = this.keyring.encryptionKeyId;
    const key = this.keyring.keys.get(keyId)!;
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.setAAD(additionalData(keyId));
    const ciphertext = Buffer.concat([cipher.update(serializePayload(payload)), cipher.final()]);
    return {
      metadata: {
        encoding: Buffer.from(ENCRYPTED_ENCODING),
        [KEY_ID_METADATA]: Buffer.from(keyId),
      },
      data: Buffer.concat([Buffer.of(FORMAT_VERSION), iv, ciphertext, cipher.getAuthTag()]),
    };
  }

  private decrypt(payload: Payload): Payload {
    const encoding = payload.metadata?.encoding;
    if (encoding === undefined || Buffer.from(encoding).toString() !== ENCRYPTED_ENCODING) return payload;

    const rawKeyId = payload.metadata?.[KEY_ID_METADATA];
    if (rawKeyId === undefined) {
      throw new PayloadDecryptionError(`Cannot decrypt payload: its metadata has no ${KEY_ID_METADATA}, so the key that encrypted it is unknown.`, null);
    }
    const keyId = Buffer.from(rawKeyId).toString();
    const key = this.keyring.keys.get(keyId);
    if (key === undefined) {
      throw new PayloadDecryptionError(
        `Cannot decrypt payload encrypted with key id ${keyId}: no key with that id is configured (configured key ids: ${[...this.keyring.keys.keys()].join(', ')}). Add it to SKYNEWT_PAYLOAD_KEYS_FILE as {"${keyId}": "<base64 key>"}.`,
        keyId,
      );
    }

    const data = Buffer.from(payload.data ?? new Uint8Array());
    if (data.length < 1 + IV_BYTES + TAG_BYTES || data[0] !== FORMAT_VERSION) {
      throw new PayloadDecryptionError(`Cannot decrypt payload encrypted with key id ${keyId}: the data is not in format version ${FORMAT_VERSION} (${data.length} bytes).`, keyId);
    }
    const iv = data.subarray(1, 1 + IV_BYTES);
    const tag = data.subarray(data.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAAD(additionalData(keyId));
    decipher.setAuthTag(tag);
    let plaintext: Buffer;
    try {
      plaintext = Buffer.concat([decipher.update(data.subarray(1 + IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      throw new PayloadDecryptionError(
        `Cannot decrypt payload encrypted with key id ${keyId}: authentication failed, so the configured key with id ${keyId} is not the key that encrypted it, or the payload was altered.`,
        keyId,
      );
    }
    return deserializePayload(plaintext, keyId);
  }
}

/** Returns a data converter whose codec encrypts every payload with the keyring's encryption key. */
export function encryptingDataConverter(keyring: PayloadKeyring): DataConverter {
  // NOTE: failure messages and stack traces stay plaintext in the history. Moving them into
  // encoded attributes needs a failure converter module (`failureConverterPath`) bundled into the
  // workflow code, which the prebuilt workflow bundles do not include.
  return { payloadCodecs: [new AesGcmPayloadCodec(keyring)] };
}

function additionalData(keyId: string): Buffer {
  return Buffer.from(`skynewt-payload-v${FORMAT_VERSION}:${keyId}`);
}

function serializePayload(payload: Payload): Buffer {
  const metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(payload.metadata ?? {})) metadata[name] = Buffer.from(value).toString('base64');
  const header = Buffer.from(JSON.stringify(metadata));
  const length = Buffer.alloc(4);
  length.writeUInt32BE(header.length);
  return Buffer.concat([length, header, Buffer.from(payload.data ?? new Uint8Array())]);
}

function deserializePayload(plaintext: Buffer, keyId: string): Payload {
  const headerLength = plaintext.length >= 4 ? plaintext.readUInt32BE(0) : -1;
  if (headerLength < 0 || 4 + headerLength > plaintext.length) {
    throw new PayloadDecryptionError(`Decrypted payload with key id ${keyId} has an invalid layout (${plaintext.length} bytes).`, keyId);
  }
  const encoded = JSON.parse(plaintext.subarray(4, 4 + headerLength).toString()) as Record<string, string>;
  const metadata: Record<string, Uint8Array> = {};
  for (const [name, value] of Object.entries(encoded)) metadata[name] = Buffer.from(value, 'base64');
  return { metadata, data: plaintext.subarray(4 + headerLength) };
}
