/**
 * Lists a batch's images and writes the listing to storage as one object per shard, so the
 * workflow history carries only the listing's URI and counts, never the keys themselves.
 */
import path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { Context, log } from '@temporalio/activity';
import type { ObjectStore } from './storage/object-store';
import { joinUri, parseUri, toFileUri } from './storage/uri';
import { invalidInput } from './failures';
import type { Listing } from './types';
import { manifestUri } from './write-manifest';

/** File extensions treated as images when listing a folder or prefix (case-insensitive). */
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg', '.webp', '.tif', '.tiff', '.gif', '.avif'];

export interface ListInputsRequest {
  /** Workflow that owns the batch; a second workflow with the same batch id is rejected. */
  workflowId: string;
  input: string;
  output?: string;
  batchId: string;
  shardSize: number;
}

export interface ListInputsResult {
  outputUri: string;
  listing: Listing;
}

export function isImageUri(uri: string): boolean {
  // S3 keys and file names are taken literally: a `?` is part of the name, not a query string.
  const lower = uri.toLowerCase();
  return IMAGE_EXTENSIONS.some((ext) => lower.endsWith(ext));
}

export function createListInputs(deps: { store: ObjectStore; resultsRoot: string }) {
  return async function listInputs(request: ListInputsRequest): Promise<ListInputsResult> {
    const outputUri = joinUri(request.output ?? deps.resultsRoot, request.batchId);
    const listingUri = joinUri(outputUri, 'inputs');
    await claimOutput(deps.store, outputUri, request);
    const hash = createHash('sha256');
    let chunk: string[] = [];
    let images = 0;
    let shards = 0;

    const flush = async () => {
      const name = `shard-${String(shards).padStart(5, '0')}.txt`;
      await deps.store.put(joinUri(listingUri, name), chunk.join('\n') + '\n', { contentType: 'text/plain' }).catch((err: unknown) => {
        throw missingBucket(err, 'output', outputUri);
      });
      shards += 1;
      chunk = [];
      Context.current().heartbeat({ images, shards });
    };

    try {
      for await (const uri of enumerateInputs(deps.store, request.input)) {
        chunk.push(uri);
        hash.update(uri + '\n');
        images += 1;
        if (chunk.length === request.shardSize) await flush();
      }
    } catch (err) {
      throw missingBucket(err, 'input', request.input);
    }
    if (chunk.length > 0) await flush();

    if (images === 0) {
      throw invalidInput(
        `Invalid batch input: "input" ${request.input} contains no images; expected files ending in ${IMAGE_EXTENSIONS.join(', ')} or a manifest file with one image URI per line.`,
      );
    }
    log.info('Inputs listed', { batchId: request.batchId, images, shards, listing: listingUri });
    return { outputUri, listing: { uri: listingUri, images, shards, sha256: hash.digest('hex') } };
  };
}

/**
 * Claims `<output>/<batchId>/` for this workflow by writing `batch.json`, so two workflows given
 * the same batch id cannot write into one folder, and a finished batch is never overwritten.
 * A retry of the same workflow finds its own claim and goes on.
 */
async function claimOutput(store: ObjectStore, outputUri: string, request: ListInputsRequest): Promise<void> {
  const claimUri = joinUri(outputUri, 'batch.json');
  const taken = (message: string) =>
    invalidInput(`Invalid batch input: "batchId" ${request.batchId} ${message} at ${outputUri}; choose another batchId or output, so that batch's results are not overwritten.`);
  if (await store.exists(manifestUri(outputUri))) throw taken('already has finished results');
  if (await store.exists(claimUri)) {
    const claim = JSON.parse((await store.get(claimUri)).body.toString('utf8')) as { workflowId?: string };
    if (claim.workflowId !== request.workflowId) throw taken(`is already used by workflow ${claim.workflowId}`);
    return;
  }
  const body = JSON.stringify({ batchId: request.batchId, workflowId: request.workflowId, input: request.input }, null, 2);
  await store.put(claimUri, body, { contentType: 'application/json' }).catch((err: unknown) => {
    throw unwritableOutput(err, outputUri);
  });
}

/** Converts an output that cannot be written into `InvalidBatchInput`, naming the cause. */
function unwritableOutput(err: unknown, outputUri: string): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (code && ['EROFS', 'EACCES', 'EPERM', 'ENOTDIR', 'ENOENT', 'ENAMETOOLONG'].includes(code)) {
    return invalidInput(`Invalid batch input: "output" ${outputUri} cannot be written (${code}: ${(err as Error).message}); give a writable folder or bucket.`);
  }
  return missingBucket(err, 'output', outputUri);
}

/** Converts a missing-bucket error into `InvalidBatchInput`, because no retry can fix it. */
function missingBucket(err: unknown, field: 'input' | 'output', uri: string): unknown {
  if (err instanceof Error && err.name === 'NoSuchBucket') {
    return invalidInput(`Invalid batch input: the bucket of "${field}" ${uri} does not exist; create it or give another ${field}.`);
  }
  return err;
}

/** Yields image URIs in a stable order: folder and prefix listings sorted, manifests as written. */
async function* enumerateInputs(store: ObjectStore, input: string): AsyncGenerator<string> {
  const parsed = parseInput(input);
  if (parsed.scheme === 'file') {
    const info = await stat(parsed.path).catch(() => null);
    if (info === null) {
      throw invalidInput(`Invalid batch input: "input" ${input} does not exist; give an existing folder, image or manifest file.`);
    }
    if (info.isDirectory()) {
      yield* imagesUnder(store, toFileUri(parsed.path));
    } else if (isImageUri(parsed.path)) {
      yield toFileUri(parsed.path);
    } else {
      yield* manifestLines(store, toFileUri(parsed.path), path.dirname(parsed.path));
    }
    return;
  }

  // An S3 URI naming an existing object is a single image or a manifest; otherwise it is a prefix.
  if (parsed.key !== '' && !parsed.key.endsWith('/') && (await store.exists(input))) {
    if (isImageUri(input)) yield input;
    else yield* manifestLines(store, input, null);
    return;
  }
  yield* imagesUnder(store, input);
}

function parseInput(input: string) {
  try {
    return parseUri(input);
  } catch (err) {
    throw invalidInput(`Invalid batch input: "input" ${(err as Error).message}`);
  }
}

async function* imagesUnder(store: ObjectStore, prefixUri: string): AsyncGenerator<string> {
  for await (const entry of store.list(prefixUri, Context.current().cancellationSignal)) {
    if (isImageUri(entry.uri)) yield entry.uri;
  }
}

/**
 * Reads a manifest: one image URI per line; blank lines and lines starting with `#` are skipped.
 * Relative paths in a local manifest are resolved against the manifest's folder.
 */
async function* manifestLines(store: ObjectStore, manifestUri: string, baseDir: string | null): AsyncGenerator<string> {
  // Read as a stream, so a manifest of millions of lines never sits in memory whole.
  let number = 0;
  for await (const raw of textLines(await store.stream(manifestUri), manifestUri)) {
    number += 1;
    const line = (number === 1 ? raw.replace(/^\uFEFF/, '') : raw).trim();
    if (line === '' || line.startsWith('#')) continue;
    const isRelativePath = !line.includes('://') && !line.startsWith('/');
    if (isRelativePath && baseDir === null) {
      throw invalidInput(`Invalid batch input: manifest ${manifestUri} line ${number} is the relative path ${JSON.stringify(line)}; a manifest in S3 must list full s3:// URIs.`);
    }
    const candidate = isRelativePath && baseDir !== null ? path.resolve(baseDir, line) : line;
    try {
      const parsed = parseUri(candidate);
      yield parsed.scheme === 'file' ? toFileUri(parsed.path) : candidate;
    } catch (err) {
      throw invalidInput(`Invalid batch input: manifest ${manifestUri} line ${number}: ${(err as Error).message}`);
    }
  }
}

/**
 * Splits a stream of UTF-8 chunks into lines without their `\n` or `\r\n`. A NUL byte in the
 * first 8 KiB means binary data, such as an image with an unknown extension, so it is rejected.
 */
async function* textLines(chunks: AsyncIterable<Buffer>, manifestUri: string): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let checked = 0;
  let rest = '';
  for await (const chunk of chunks) {
    if (checked < 8192) {
      if (chunk.subarray(0, 8192 - checked).includes(0)) {
        throw invalidInput(
          `Invalid batch input: "input" ${manifestUri} is neither an image (${IMAGE_EXTENSIONS.join(', ')}) nor a text manifest of image URIs; rename the image or list it in a manifest.`,
        );
      }
      checked += chunk.length;
    }
    const lines = (rest + decoder.write(chunk)).split('\n');
    rest = lines.pop() ?? '';
    for (const line of lines) yield line.endsWith('\r') ? line.slice(0, -1) : line;
  }
  const last = rest + decoder.end();
  if (last !== '') yield last.endsWith('\r') ? last.slice(0, -1) : last;
}
