/**
 * Decodes image bytes into a model's input tensor with sharp (libvips).
 */
import sharp, { type Metadata } from 'sharp';
import type { PreprocessSpec } from '../types';

export type ImageDecodeReason = 'empty' | 'too-large' | 'undecodable';

/** Raised when image bytes cannot become an input tensor; `reason` is stable for callers. */
export class ImageDecodeError extends Error {
  override readonly name = 'ImageDecodeError';

  constructor(
    readonly reason: ImageDecodeReason,
    message: string,
  ) {
    super(message);
  }
}

export interface DecodedImage {
  /** Size of the original image (first page) in pixels, before resizing. */
  width: number;
  height: number;
  /** Model input, 1×3×H×W in CHW order, RGB, `(pixel / 255 - mean) / std`. */
  tensor: Float32Array;
  dims: [1, 3, number, number];
}

/**
 * Decodes the first page of an image, converts it to 8-bit sRGB without alpha and resizes it
 * to exactly `spec.width`×`spec.height`, ignoring aspect ratio. Grey, RGBA and 16-bit inputs
 * are accepted. EXIF orientation is not applied, so `width`, `height` and the tensor follow
 * the stored pixel grid.
 *
 * Rejects with ImageDecodeError: `empty` for no bytes or a zero-sized image, `too-large` when
 * width × height exceeds `maxPixels`, and `undecodable` for anything sharp cannot read.
 */
export async function decodeImage(bytes: Buffer, spec: PreprocessSpec, maxPixels: number): Promise<DecodedImage> {
  validateSpec(spec);
  if (!Number.isInteger(maxPixels) || maxPixels <= 0) {
    // sharp treats a limit of 0 as "no limit", so a bad value must not reach it.
    throw new RangeError(`maxPixels must be a positive integer, got ${maxPixels}`);
  }
  if (bytes.length === 0) {
    throw new ImageDecodeError('empty', 'image is empty (0 bytes)');
  }

  // The header gives the size before any pixel is decoded, so an oversized image is
  // rejected with its real size instead of sharp's generic limit message.
  const metadata = await readMetadata(bytes);
  const width = metadata.width ?? 0;
  const height = metadata.height ?? 0;
  if (width === 0 || height === 0) {
    throw new ImageDecodeError('empty', `image has no pixels (${width}x${height})`);
  }
  if (width * height > maxPixels) {
    throw tooLarge(width, height, maxPixels);
  }

  const pixels = await decodePixels(bytes, spec, maxPixels, width, height);
  return { width, height, tensor: toTensor(pixels, spec), dims: [1, 3, spec.height, spec.width] };
}

async function readMetadata(bytes: Buffer): Promise<Metadata> {
  try {
    // Reading the header decodes no pixels, so sharp's own pixel limit (268 M by default) is
    // lifted here. The caller compares the size with maxPixels itself.
    return await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (err) {
    throw new ImageDecodeError('undecodable', `image could not be decoded: ${errorMessage(err)}`);
  }
}

async function decodePixels(
  bytes: Buffer,
  spec: PreprocessSpec,
  maxPixels: number,
  width: number,
  height: number,
): Promise<Buffer> {
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, pages: 1, page: 0 })
      .removeAlpha()
      .toColourspace('srgb')
      .resize(spec.width, spec.height, { fit: 'fill' })
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || info.width !== spec.width || info.height !== spec.height) {
      throw new Error(`sharp returned ${info.width}x${info.height} with ${info.channels} channels`);
    }
    return data;
  } catch (err) {
    // The metadata check above makes this unlikely, but sharp may still apply its own limit.
    if (errorMessage(err).includes('pixel limit')) {
      throw tooLarge(width, height, maxPixels);
    }
    throw new ImageDecodeError('undecodable', `image could not be decoded: ${errorMessage(err)}`);
  }
}

/** Converts interleaved 8-bit RGB (HWC) to normalised float32 planes (CHW). */
function toTensor(pixels: Buffer, spec: PreprocessSpec): Float32Array {
  const planeSize = spec.width * spec.height;
  const tensor = new Float32Array(3 * planeSize);
  for (let channel = 0; channel < 3; channel++) {
    // (pixel / 255 - mean) / std, folded into one multiply and one add per pixel.
    const scale = 1 / (255 * spec.std[channel]);
    const offset = -spec.mean[channel] / spec.std[channel];
    const planeStart = channel * planeSize;
    for (let i = 0; i < planeSize; i++) {
      tensor[planeStart + i] = pixels[i * 3 + channel] * scale + offset;
    }
  }
  return tensor;
}

function validateSpec(spec: PreprocessSpec): void {
  for (const [name, value] of [
    ['width', spec.width],
    ['height', spec.height],
  ] as const) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`preprocess ${name} must be a positive integer, got ${value}`);
    }
  }
  if (spec.mean.length !== 3 || spec.std.length !== 3) {
    throw new RangeError('preprocess mean and std must each have 3 values (R, G, B)');
  }
  if (spec.std.some((value) => !(value > 0))) {
    throw new RangeError(`preprocess std values must be positive, got [${spec.std.join(', ')}]`);
  }
}

function tooLarge(width: number, height: number, maxPixels: number): ImageDecodeError {
  return new ImageDecodeError(
    'too-large',
    `image is ${width}x${height} = ${width * height} pixels, more than the limit of ${maxPixels}; ` +
      'raise the batch option maxPixels to process it',
  );
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
