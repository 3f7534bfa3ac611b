/**
 * Parsing and joining of the object URIs used everywhere in SkyNewt: `s3://bucket/key`,
 * `file:///abs/path` and plain local paths.
 *
 * S3 keys are taken verbatim, without percent-decoding, as the AWS CLI does, so a key may contain
 * spaces or `%`. File URIs are percent-encoded by Node's `pathToFileURL` and decoded by
 * `fileURLToPath`, so any local path survives a round trip.
 */

import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export type ParsedUri = { scheme: 'file'; path: string } | { scheme: 's3'; bucket: string; key: string };

const ACCEPTED_FORMS = 's3://bucket/key, file:///absolute/path, or a local path';

/** Matches a leading `scheme://` as defined by RFC 3986. */
const SCHEME_PATTERN = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/**
 * Parses an object URI. Plain paths are resolved against `process.cwd()`, so the returned file
 * path is always absolute. An S3 key may be empty (the whole bucket) and keeps a trailing `/`.
 * Throws when the value is empty, has another scheme, or is an S3 URI without a bucket.
 */
export function parseUri(uri: string): ParsedUri {
  if (typeof uri !== 'string' || uri.trim() === '') {
    throw new Error(`Invalid URI ${JSON.stringify(uri)}: it is empty. Expected ${ACCEPTED_FORMS}.`);
  }

  if (/^file:/i.test(uri)) {
    return { scheme: 'file', path: parseFileUri(uri) };
  }

  const scheme = SCHEME_PATTERN.exec(uri)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    return { scheme: 'file', path: path.resolve(uri) };
  }
  if (scheme !== 's3') {
    throw new Error(`Invalid URI ${JSON.stringify(uri)}: scheme ${scheme}:// is not supported. Expected ${ACCEPTED_FORMS}.`);
  }

  const rest = uri.slice('s3://'.length);
  const slash = rest.indexOf('/');
  const bucket = slash === -1 ? rest : rest.slice(0, slash);
  const key = slash === -1 ? '' : rest.slice(slash + 1);
  if (bucket === '') {
    throw new Error(`Invalid URI ${JSON.stringify(uri)}: the bucket name is missing. Expected ${ACCEPTED_FORMS}.`);
  }
  return { scheme: 's3', bucket, key };
}

function parseFileUri(uri: string): string {
  try {
    return fileURLToPath(new URL(uri));
  } catch (error) {
    // fileURLToPath rejects a host other than localhost, e.g. `file://relative/path`.
    const reason = error instanceof Error ? error.message : String(error);
    throw new Error(`Invalid URI ${JSON.stringify(uri)}: ${reason}. Expected ${ACCEPTED_FORMS}.`, { cause: error });
  }
}

/** Formats a parsed URI. File paths come back as `file://` URIs. */
export function formatUri(parsed: ParsedUri): string {
  if (parsed.scheme === 'file') {
    return toFileUri(parsed.path);
  }
  return `s3://${parsed.bucket}/${parsed.key}`;
}

/** Converts a local path, resolved against `process.cwd()`, to a percent-encoded `file://` URI. */
export function toFileUri(localPath: string): string {
  return pathToFileURL(path.resolve(localPath)).href;
}

/**
 * Appends path segments to a URI with exactly one `/` between parts. Empty segments are skipped
 * and a trailing `/` on the last segment is kept, so a folder prefix stays a folder prefix.
 * A plain-path base comes back as a `file://` URI. File paths are normalized, so `..` segments
 * move up a folder there, while S3 keys keep `..` verbatim because S3 treats it as plain text.
 */
export function joinUri(base: string, ...segments: string[]): string {
  const parsed = parseUri(base);
  const parts = segments.map((segment) => segment.replace(/^\/+|\/+$/g, '')).filter((segment) => segment !== '');
  const last = segments.length > 0 ? segments[segments.length - 1] : '';
  const keepTrailingSlash = parts.length > 0 && last.endsWith('/');

  if (parsed.scheme === 'file') {
    const joined = toFileUri(path.join(parsed.path, ...parts));
    return keepTrailingSlash && !joined.endsWith('/') ? `${joined}/` : joined;
  }

  const baseKey = parsed.key.replace(/\/+$/, '');
  const key = [baseKey, ...parts].filter((part) => part !== '').join('/');
  const withSlash = keepTrailingSlash || (parts.length === 0 && parsed.key.endsWith('/') && key !== '');
  return `s3://${parsed.bucket}/${key}${withSlash ? '/' : ''}`;
}
