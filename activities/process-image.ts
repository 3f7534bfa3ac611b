/**
 * One image through one model: download, decode and preprocess, infer, postprocess, and for
 * segmentation upload the mask. Problems with the image itself become a failed record; storage
 * and model errors are thrown so the shard attempt retries from its checkpoint.
 */
import type { ObjectStore } from './storage/object-store';
import { joinUri } from './storage/uri';
import { decodeImage, ImageDecodeError, type DecodedImage } from './inference/preprocess';
import { findRegions, maskPng } from './inference/segmentation';
import { topK } from './inference/classification';
import type { ModelRunner } from './inference/model-runner';
import type { ModelVersion, OutputRecord, StageTimings } from './types';

export interface ImageJob {
  index: number;
  uri: string;
  model: ModelVersion;
  outputUri: string;
  maxPixels: number;
  topK: number;
  signal: AbortSignal;
}

export interface ImageDeps {
  store: ObjectStore;
  runner: ModelRunner;
}

export function emptyTimings(): StageTimings {
  return { downloadMs: 0, decodeMs: 0, inferenceMs: 0, postprocessMs: 0, uploadMs: 0, wallMs: 0, inferenceBusyFraction: 0 };
}

/** Deterministic mask key, so a retried attempt overwrites the mask it wrote before. */
export function maskUri(outputUri: string, index: number): string {
  return joinUri(outputUri, 'masks', `${String(index).padStart(9, '0')}.png`);
}

/** Node.js error codes that mean this input path cannot be read as a file. */
const UNREADABLE_FILE_CODES = new Set(['EISDIR', 'EACCES', 'EPERM', 'ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP']);
/** S3 error names that mean this object cannot be read, whatever the retry. */
const UNREADABLE_OBJECT_NAMES = new Set(['NotFound', 'NoSuchKey', 'NoSuchBucket', 'AccessDenied', 'InvalidObjectState', 'InvalidBucketName']);

/** Returns why an input cannot be read, or null when the error may pass on retry. */
export function unreadableInput(err: unknown): string | null {
  if (!(err instanceof Error)) return null;
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && UNREADABLE_FILE_CODES.has(code)) return err.message.startsWith(code) ? err.message : `${code}: ${err.message}`;
  if (UNREADABLE_OBJECT_NAMES.has(err.name)) return `${err.name}: ${err.message}`;
  const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  if (status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429) return `HTTP ${status} ${err.name}: ${err.message}`;
  return null;
}

/** An image after download and decode: ready for inference, or already a failed record. */
export type PreparedImage =
  | { kind: 'failed'; record: OutputRecord }
  | { kind: 'ready'; base: Pick<OutputRecord, 'index' | 'input' | 'modelSha256'>; etag: string; versionId?: string; image: DecodedImage };

/** Downloads and decodes one image; an input problem becomes a failed record, not an error. */
export async function prepareImage(deps: ImageDeps, job: ImageJob, timings: StageTimings): Promise<PreparedImage> {
  const base = { index: job.index, input: job.uri, modelSha256: job.model.sha256 };

  let t = performance.now();
  let object;
  try {
    object = await deps.store.get(job.uri, job.signal);
  } catch (err) {
    // A problem with this one input is recorded; throttling, 5xx and network errors may pass
    // on retry, so they fail the attempt instead.
    const reason = unreadableInput(err);
    if (reason !== null) return { kind: 'failed', record: { ...base, inputEtag: null, status: 'failed', error: `unreadable: ${reason}` } };
    throw err;
  }
  timings.downloadMs += performance.now() - t;

  t = performance.now();
  try {
    const image = await decodeImage(object.body, job.model.preprocess, job.maxPixels);
    return { kind: 'ready', base, etag: object.etag, versionId: object.versionId, image };
  } catch (err) {
    if (err instanceof ImageDecodeError) {
      return { kind: 'failed', record: { ...base, inputEtag: object.etag, status: 'failed', error: `${err.reason}: ${err.message}` } };
    }
    throw err;
  } finally {
    timings.decodeMs += performance.now() - t;
  }
}

/** Runs the model on a prepared image, postprocesses the output and uploads any mask. */
export async function finishImage(deps: ImageDeps, job: ImageJob, prepared: PreparedImage, timings: StageTimings): Promise<OutputRecord> {
  if (prepared.kind === 'failed') return prepared.record;
  const { image } = prepared;
  const output = await deps.runner.run(job.model.sha256, image.tensor, image.dims);
  timings.inferenceMs += output.inferenceMs;

  let t = performance.now();
  const record: OutputRecord = {
    ...prepared.base,
    inputEtag: prepared.etag,
    ...(prepared.versionId ? { inputVersionId: prepared.versionId } : {}),
    status: 'ok',
    width: image.width,
    height: image.height,
  };
  if (job.model.task === 'classification') {
    record.labels = topK(output.data, job.model.labels, job.topK);
    timings.postprocessMs += performance.now() - t;
    return record;
  }

  const [mapHeight, mapWidth] = output.dims.slice(-2);
  const { threshold } = job.model;
  record.regions = findRegions(output.data, mapWidth, mapHeight, threshold, image.width, image.height);
  const png = await maskPng(output.data, mapWidth, mapHeight, threshold, image.width, image.height);
  timings.postprocessMs += performance.now() - t;

  t = performance.now();
  record.mask = maskUri(job.outputUri, job.index);
  await deps.store.put(record.mask, png, {
    contentType: 'image/png',
    metadata: { 'skynewt-model-sha256': job.model.sha256, 'skynewt-input-etag': prepared.etag },
    signal: job.signal,
  });
  timings.uploadMs += performance.now() - t;
  return record;
}

/** Processes one image from download to record, without overlapping anything. */
export async function processImage(deps: ImageDeps, job: ImageJob, timings: StageTimings): Promise<OutputRecord> {
  return finishImage(deps, job, await prepareImage(deps, job, timings), timings);
}
