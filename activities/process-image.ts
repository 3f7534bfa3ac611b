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

/**
 * Node.js error codes that mean this input path cannot be read as a file. ERR_INVALID_ARG_VALUE
 * is what `fs` raises for a path with a NUL byte, e.g. from a manifest line with `%00`.
 */
const UNREADABLE_FILE_CODES = new Set(['EISDIR', 'EACCES', 'EPERM', 'ENOENT', 'ENOTDIR', 'ENAMETOOLONG', 'ELOOP', 'ERR_INVALID_ARG_VALUE']);
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

type ReadyImage = Extract<PreparedImage, { kind: 'ready' }>;

/** An image after inference: the model's output for it, or the failed record it already was. */
export type InferredImage = { kind: 'failed'; record: OutputRecord } | { kind: 'inferred'; prepared: ReadyImage; output: { data: Float32Array; dims: number[] } };

/**
 * Runs the model once on every ready image of a group. Two or more are stacked along the batch
 * dimension, so the model must accept a dynamic batch size. Images of one model always share
 * one input size, because preprocessing resizes them to it.
 */
export async function inferImages(deps: ImageDeps, jobs: ImageJob[], prepared: PreparedImage[], timings: StageTimings): Promise<InferredImage[]> {
  const ready = prepared.flatMap((item, position) => (item.kind === 'ready' ? [{ item, position }] : []));
  const inferred: InferredImage[] = prepared.map((item) => (item.kind === 'failed' ? item : (null as unknown as InferredImage)));
  if (ready.length === 0) return inferred;
  if (ready.length === 1) {
    const { item, position } = ready[0];
    const output = await deps.runner.run(jobs[position].model.sha256, item.image.tensor, item.image.dims);
    timings.inferenceMs += output.inferenceMs;
    inferred[position] = { kind: 'inferred', prepared: item, output };
    return inferred;
  }

  const [, channels, height, width] = ready[0].item.image.dims;
  const perImage = channels * height * width;
  const stacked = new Float32Array(perImage * ready.length);
  ready.forEach(({ item }, slot) => stacked.set(item.image.tensor, slot * perImage));
  const output = await deps.runner.run(jobs[0].model.sha256, stacked, [ready.length, channels, height, width]);
  timings.inferenceMs += output.inferenceMs;

  const perOutput = output.data.length / ready.length;
  const dims = [1, ...output.dims.slice(1)];
  ready.forEach(({ item, position }, slot) => {
    inferred[position] = { kind: 'inferred', prepared: item, output: { data: output.data.subarray(slot * perOutput, (slot + 1) * perOutput), dims } };
  });
  return inferred;
}

/** Postprocesses a group's model outputs and uploads their masks, one image after another. */
export async function postprocessImages(deps: ImageDeps, jobs: ImageJob[], inferred: InferredImage[], timings: StageTimings): Promise<OutputRecord[]> {
  const records: OutputRecord[] = [];
  for (let i = 0; i < inferred.length; i++) {
    const item = inferred[i];
    records.push(item.kind === 'failed' ? item.record : await postprocessImage(deps, jobs[i], item.prepared, item.output, timings));
  }
  return records;
}

async function postprocessImage(
  deps: ImageDeps,
  job: ImageJob,
  prepared: ReadyImage,
  output: { data: Float32Array; dims: number[] },
  timings: StageTimings,
): Promise<OutputRecord> {
  const { image } = prepared;
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
  const inferred = await inferImages(deps, [job], [await prepareImage(deps, job, timings)], timings);
  return (await postprocessImages(deps, [job], inferred, timings))[0];
}
