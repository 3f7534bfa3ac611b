/**
 * ObjectStore over Amazon S3 (or an S3-compatible endpoint), for `s3://bucket/key` URIs.
 */

import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';

import type { ObjectEntry, ObjectStore, PutOptions, StoredObject } from './object-store';
import { parseUri } from './uri';

interface S3Location {
  bucket: string;
  key: string;
}

export class S3Store implements ObjectStore {
  constructor(private readonly client: S3Client) {}

  async get(uri: string, signal?: AbortSignal): Promise<StoredObject> {
    const response = await this.getObject(uri, signal);
    const body = Buffer.from(await response.Body.transformToByteArray());
    const stored: StoredObject = { body, etag: stripQuotes(response.ETag ?? '') };
    if (response.VersionId !== undefined) {
      stored.versionId = response.VersionId;
    }
    return stored;
  }

  async stream(uri: string, signal?: AbortSignal): Promise<AsyncIterable<Buffer>> {
    // In Node.js the body is a Readable, which yields Buffer chunks.
    return (await this.getObject(uri, signal)).Body as unknown as AsyncIterable<Buffer>;
  }

  /** Sends GetObject and returns the response with its body, or rejects with NotFound when the object is missing. */
  private async getObject(uri: string, signal?: AbortSignal) {
    const { bucket, key } = toObjectLocation(uri);
    try {
      const response = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
      const { Body } = response;
      if (Body === undefined) {
        throw new Error(`S3 returned no body for ${uri}.`);
      }
      return { ...response, Body };
    } catch (error) {
      throw isMissingObject(error) ? notFound(uri, error) : error;
    }
  }

  async put(uri: string, body: Buffer | string, options: PutOptions = {}): Promise<void> {
    const { bucket, key } = toObjectLocation(uri);
    await this.client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: key,
        Body: typeof body === 'string' ? Buffer.from(body, 'utf8') : body,
        ContentType: options.contentType,
        Metadata: options.metadata,
      }),
      { abortSignal: options.signal },
    );
  }

  /**
   * Lists the keys under a prefix in S3's key order (UTF-8 binary), following continuation
   * tokens. A prefix that does not end in `/` is treated as a folder, so `s3://b/p` lists keys
   * under `p/` but not `p2/...`. The bucket root lists every key. Folder markers are skipped.
   */
  async *list(prefixUri: string, signal?: AbortSignal): AsyncIterable<ObjectEntry> {
    const parsed = parseUri(prefixUri);
    if (parsed.scheme !== 's3') {
      throw new Error(`S3Store cannot list ${prefixUri}: it only handles s3:// URIs.`);
    }
    const prefix = parsed.key === '' || parsed.key.endsWith('/') ? parsed.key : `${parsed.key}/`;

    let continuationToken: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({
          Bucket: parsed.bucket,
          Prefix: prefix === '' ? undefined : prefix,
          ContinuationToken: continuationToken,
        }),
        { abortSignal: signal },
      );
      for (const object of page.Contents ?? []) {
        // Keys ending in `/` are the zero-byte folder markers that the S3 console creates, not
        // objects that get() could return.
        if (object.Key === undefined || object.Key.endsWith('/')) {
          continue;
        }
        const entry: ObjectEntry = { uri: `s3://${parsed.bucket}/${object.Key}`, size: object.Size ?? 0 };
        if (object.ETag !== undefined) {
          entry.etag = stripQuotes(object.ETag);
        }
        yield entry;
      }
      continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (continuationToken !== undefined);
  }

  async exists(uri: string): Promise<boolean> {
    const { bucket, key } = toObjectLocation(uri);
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
      return true;
    } catch (error) {
      if (isMissingObject(error)) {
        return false;
      }
      throw error;
    }
  }

  /** Deletes an object. Deleting a missing key succeeds, because S3 reports success for it. */
  async delete(uri: string): Promise<void> {
    const { bucket, key } = toObjectLocation(uri);
    await this.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  }
}

function toObjectLocation(uri: string): S3Location {
  const parsed = parseUri(uri);
  if (parsed.scheme !== 's3') {
    throw new Error(`S3Store cannot access ${uri}: it only handles s3:// URIs.`);
  }
  if (parsed.key === '' || parsed.key.endsWith('/')) {
    throw new Error(`Invalid object URI ${uri}: it names a bucket or folder, not an object key.`);
  }
  return { bucket: parsed.bucket, key: parsed.key };
}

function stripQuotes(etag: string): string {
  return etag.replace(/^"|"$/g, '');
}

/**
 * GetObject reports a missing key as `NoSuchKey`. HeadObject has no response body, so the SDK
 * can only name it `NotFound`. A missing bucket (`NoSuchBucket`) is a configuration error and
 * is not mapped.
 */
function isMissingObject(error: unknown): boolean {
  const name = (error as { name?: unknown } | undefined)?.name;
  return name === 'NoSuchKey' || name === 'NotFound';
}

function notFound(uri: string, cause: unknown): Error {
  const error = new Error(`Object not found: ${uri}`, { cause });
  error.name = 'NotFound';
  return error;
}
