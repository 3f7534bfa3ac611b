/**
 * AES-256 keys for payload encryption, read from the environment. Encryption is off unless
 * SKYNEWT_PAYLOAD_KEY, SKYNEWT_PAYLOAD_KEY_FILE or SKYNEWT_PAYLOAD_KEYS_FILE is set.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

/** AES-256 key length in bytes. */
export const PAYLOAD_KEY_BYTES = 32;

/** Keys that decrypt payloads, by key id, and the id of the key that encrypts new payloads. */
export interface PayloadKeyring {
  encryptionKeyId: string;
  /** Every key that can decrypt, by key id; contains the encryption key. */
  keys: Map<string, Buffer>;
}

const KEY_ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;

/** Returns the default key id of a key: the first 8 hex digits of its sha256. */
export function defaultKeyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 8);
}

/**
 * Parses a 32-byte key written as 64 hex digits or as base64. `source` names where the text came
 * from, for the error message; the key itself is never included in a message.
 */
export function parsePayloadKey(text: string, source: string): Buffer {
  const trimmed = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return Buffer.from(trimmed, 'hex');
  if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) {
    const key = Buffer.from(trimmed, 'base64');
    if (key.length === PAYLOAD_KEY_BYTES) return key;
  }
  throw new Error(`Invalid payload key in ${source}: expected ${PAYLOAD_KEY_BYTES} bytes as 64 hex digits or as base64 (44 characters); generate one with: openssl rand -base64 32`);
}

function checkKeyId(id: string, source: string): string {
  if (!KEY_ID_PATTERN.test(id)) {
    throw new Error(`Invalid payload key id ${JSON.stringify(id)} in ${source}: expected 1 to 64 letters, digits, '.', '_', ':' or '-'.`);
  }
  return id;
}

/** Reads a key file that contains the key as hex or base64 text, or as exactly 32 raw bytes. */
function readKeyFile(file: string, variable: string): Buffer {
  const raw = readFileSync(file);
  const source = `${variable} (${file})`;
  try {
    return parsePayloadKey(raw.toString('utf8'), source);
  } catch (err) {
    if (raw.length === PAYLOAD_KEY_BYTES) return raw;
    throw err;
  }
}

/** Reads SKYNEWT_PAYLOAD_KEYS_FILE: a JSON object mapping key ids to hex or base64 keys. */
function readKeysFile(file: string): Map<string, Buffer> {
  const source = `SKYNEWT_PAYLOAD_KEYS_FILE (${file})`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`Invalid ${source}: ${(err as Error).message}; expected a JSON object such as {"key-2024": "<base64 key>"}.`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`Invalid ${source}: expected a JSON object mapping key ids to keys, such as {"key-2024": "<base64 key>"}.`);
  }
  const keys = new Map<string, Buffer>();
  for (const [id, value] of Object.entries(parsed)) {
    checkKeyId(id, source);
    if (typeof value !== 'string') throw new Error(`Invalid ${source}: the key for id ${JSON.stringify(id)} must be a string of hex or base64.`);
    keys.set(id, parsePayloadKey(value, `${source}, key id ${JSON.stringify(id)}`));
  }
  return keys;
}

/**
 * Builds the keyring from the environment, or returns null when payload encryption is off.
 *
 * - SKYNEWT_PAYLOAD_KEY or SKYNEWT_PAYLOAD_KEY_FILE: the encryption key (not both).
 * - SKYNEWT_PAYLOAD_KEY_ID: its id, default `defaultKeyId(key)`. Without an encryption key, it
 *   names the key in SKYNEWT_PAYLOAD_KEYS_FILE that encrypts.
 * - SKYNEWT_PAYLOAD_KEYS_FILE: more keys that decrypt, for rotation.
 */
export function loadPayloadKeyring(env: NodeJS.ProcessEnv = process.env): PayloadKeyring | null {
  const inline = env.SKYNEWT_PAYLOAD_KEY || undefined;
  const keyFile = env.SKYNEWT_PAYLOAD_KEY_FILE || undefined;
  const keysFile = env.SKYNEWT_PAYLOAD_KEYS_FILE || undefined;
  const configuredId = env.SKYNEWT_PAYLOAD_KEY_ID || undefined;
  if (inline === undefined && keyFile === undefined && keysFile === undefined) {
    if (configuredId !== undefined) throw new Error('SKYNEWT_PAYLOAD_KEY_ID is set but no key is: set SKYNEWT_PAYLOAD_KEY, SKYNEWT_PAYLOAD_KEY_FILE or SKYNEWT_PAYLOAD_KEYS_FILE.');
    return null;
  }
  if (inline !== undefined && keyFile !== undefined) {
    throw new Error('Both SKYNEWT_PAYLOAD_KEY and SKYNEWT_PAYLOAD_KEY_FILE are set; set only one.');
  }

  const keys = keysFile === undefined ? new Map<string, Buffer>() : readKeysFile(keysFile);
  const primary = inline !== undefined ? parsePayloadKey(inline, 'SKYNEWT_PAYLOAD_KEY') : keyFile !== undefined ? readKeyFile(keyFile, 'SKYNEWT_PAYLOAD_KEY_FILE') : undefined;
  if (primary === undefined) {
    if (configuredId === undefined || !keys.has(configuredId)) {
      throw new Error(`SKYNEWT_PAYLOAD_KEYS_FILE is set without SKYNEWT_PAYLOAD_KEY or SKYNEWT_PAYLOAD_KEY_FILE, so SKYNEWT_PAYLOAD_KEY_ID must name the key that encrypts; the file has key ids ${[...keys.keys()].join(', ') || 'none'}.`);
    }
    return { encryptionKeyId: configuredId, keys };
  }

  const encryptionKeyId = checkKeyId(configuredId ?? defaultKeyId(primary), 'SKYNEWT_PAYLOAD_KEY_ID');
  const listed = keys.get(encryptionKeyId);
  if (listed !== undefined && !listed.equals(primary)) {
    throw new Error(`Key id ${encryptionKeyId} names one key in SKYNEWT_PAYLOAD_KEYS_FILE and another in SKYNEWT_PAYLOAD_KEY(_FILE); give each key its own id.`);
  }
  keys.set(encryptionKeyId, primary);
  return { encryptionKeyId, keys };
}
