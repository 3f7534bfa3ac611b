/**
 * The default ObjectStore: one object that routes each URI to the local filesystem or to S3 by
 * its scheme, so callers never pick a store themselves.
 */

import { S3Client } from '@aws-sdk/client-s3';

import { FileStore } from './file-store';
import type { ObjectEntry, ObjectStore, PutOptions, StoredObject } from './object-store';
import { S3Store } from './s3-store';
import { parseUri } from './uri';

export interface ObjectStoreOptions {
  /** Client for `s3://` URIs. When absent, createS3Client() makes one on first S3 use. */
  s3?: S3Client;
}

/** Creates a store that handles `file://` URIs, plain paths and `s3://` URIs. */
export function createObjectStore(options: ObjectStoreOptions = {}): ObjectStore {
  return new SchemeRoutingStore(options.s3);
}

/**
 * Creates the S3 client used when none is injected. Path-style addressing is forced when an
 * endpoint override is set, because local S3 emulators such as MinIO and moto do not serve
 * bucket subdomains, or when SKYNEWT_S3_FORCE_PATH_STYLE is `true` or `1`. The SDK itself reads
 * the endpoint (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL) and the credentials from the environment.
 */
export function createS3Client(): S3Client {
  const env = process.env;
  const forcePathStyle =
    Boolean(env.AWS_ENDPOINT_URL_S3) ||
    Boolean(env.AWS_ENDPOINT_URL) ||
    /^(true|1)$/i.test(env.SKYNEWT_S3_FORCE_PATH_STYLE ?? '');
  // Without a socket timeout a stalled S3 connection would hang a shard until its activity
  // timeout. With one, the SDK's own retries (3 attempts) take over.
  const requestTimeout = Number(env.SKYNEWT_S3_REQUEST_TIMEOUT_MS || 60_000);
  return new S3Client({
    forcePathStyle,
    region: env.AWS_REGION || 'us-east-1',
    requestHandler: { connectionTimeout: 5_000, requestTimeout, throwOnRequestTimeout: true },
  });
}

class SchemeRoutingStore implements ObjectStore {
  private readonly files = new FileStore();
  private s3Store: S3Store | undefined;

  constructor(private readonly s3Client: S3Client | undefined) {}

  // The methods are async so that an invalid URI rejects the returned promise instead of throwing.
  async get(uri: string, signal?: AbortSignal): Promise<StoredObject> {
    return this.storeFor(uri).get(uri, signal);
  }

  async stream(uri: string, signal?: AbortSignal): Promise<AsyncIterable<Buffer>> {
    return this.storeFor(uri).stream(uri, signal);
  }

  async put(uri: string, body: Buffer | string, options?: PutOptions): Promise<void> {
    return this.storeFor(uri).put(uri, body, options);
  }

  async *list(prefixUri: string, signal?: AbortSignal): AsyncIterable<ObjectEntry> {
    yield* this.storeFor(prefixUri).list(prefixUri, signal);
  }

  async exists(uri: string): Promise<boolean> {
    return this.storeFor(uri).exists(uri);
  }

  async delete(uri: string): Promise<void> {
    return this.storeFor(uri).delete(uri);
  }

  private storeFor(uri: string): ObjectStore {
    if (parseUri(uri).scheme === 'file') {
      return this.files;
    }
    this.s3Store ??= new S3Store(this.s3Client ?? createS3Client());
    return this.s3Store;
  }
}
