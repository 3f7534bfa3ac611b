import { createHash } from 'node:crypto';

/** Returns the lowercase hex SHA-256 digest of the bytes. Strings are hashed as UTF-8. */
export function sha256Hex(data: Buffer | Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}
