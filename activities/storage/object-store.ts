/**
 * The object store seen by activities and the CLI: one interface over local folders and S3, so
 * inputs, outputs and registry artifacts are all plain URIs.
 */

export interface StoredObject {
  body: Buffer;
  /** S3 ETag (quotes removed) for S3 objects, or `sha256:<hex>` of the bytes for files. */
  etag: string;
  /** S3 version id where the bucket is versioned; absent for files. */
  versionId?: string;
}

export interface ObjectEntry {
  uri: string;
  size: number;
  etag?: string;
}

export interface PutOptions {
  contentType?: string;
  /** User metadata; stored as S3 object metadata, ignored for files. */
  metadata?: Record<string, string>;
  signal?: AbortSignal;
}

export interface ObjectStore {
  /** Reads a whole object. Rejects with a `NotFound`-named error when it does not exist. */
  get(uri: string, signal?: AbortSignal): Promise<StoredObject>;
  /**
   * Reads an object as a stream of chunks, for objects too large to hold in memory, such as a
   * manifest of millions of lines. Rejects with a `NotFound`-named error when it does not exist.
   */
  stream(uri: string, signal?: AbortSignal): Promise<AsyncIterable<Buffer>>;
  /** Writes a whole object, replacing any object at the same URI. */
  put(uri: string, body: Buffer | string, options?: PutOptions): Promise<void>;
  /** Lists objects under a folder or key prefix, recursively, sorted by URI. */
  list(prefixUri: string, signal?: AbortSignal): AsyncIterable<ObjectEntry>;
  /** Returns true when the object exists. */
  exists(uri: string): Promise<boolean>;
  delete(uri: string): Promise<void>;
}
