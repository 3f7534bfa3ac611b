/**
 * A PNG encoder for binary masks. A mask is upscaled from the model's output map to the
 * original image size, which makes its rows a few long runs of one value. Filling those runs
 * directly and deflating them run-length takes a fraction of the time of sharp's resize and PNG
 * encoder (`npm run bench:masks`; figures in docs/benchmarks.md). On a host without a GPU, that
 * CPU time is taken from inference.
 */
import { promisify } from 'node:util';
import { constants, deflate } from 'node:zlib';

const deflateAsync = promisify(deflate);

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
/** Run-length deflate, because a mask row is a few runs of 0 and 255. */
const DEFLATE_OPTIONS = { strategy: constants.Z_RLE };

/**
 * Encodes the pixels of `prob` (`mapWidth`×`mapHeight` values, row-major) above `threshold` as
 * 255 and the rest as 0, in an 8-bit greyscale PNG of `width`×`height`. Scaling is nearest
 * neighbour from pixel centres, so the mask stays binary. Deflate runs on libuv's thread pool.
 */
export async function encodeMaskPng(prob: Float32Array, threshold: number, mapWidth: number, mapHeight: number, width: number, height: number): Promise<Buffer> {
  // firstColumn[sx] is the first output column whose centre falls in source column sx, so
  // source columns [a, b) cover output columns [firstColumn[a], firstColumn[b]).
  const firstColumn = new Uint32Array(mapWidth + 1).fill(width);
  for (let x = width - 1; x >= 0; x--) firstColumn[Math.min(mapWidth - 1, Math.floor(((x + 0.5) * mapWidth) / width))] = x;
  for (let sx = mapWidth - 1; sx >= 0; sx--) firstColumn[sx] = Math.min(firstColumn[sx], firstColumn[sx + 1]);

  // Each row is a filter byte (0, none) and `width` pixels, all 0 to start with. A row that maps
  // to the same source row as the one above is copied. Otherwise only runs above the threshold
  // are filled, so an empty row costs one scan of its source row.
  const stride = width + 1;
  const raw = Buffer.alloc(stride * height);
  let previousSourceY = -1;
  for (let y = 0; y < height; y++) {
    const sourceY = Math.min(mapHeight - 1, Math.floor(((y + 0.5) * mapHeight) / height));
    const row = y * stride + 1;
    if (sourceY === previousSourceY) {
      raw.copyWithin(row - 1, row - 1 - stride, row - 1);
      continue;
    }
    previousSourceY = sourceY;
    const source = sourceY * mapWidth;
    for (let sx = 0; sx < mapWidth; sx++) {
      if (!(prob[source + sx] > threshold)) continue;
      const runStart = sx;
      while (sx + 1 < mapWidth && prob[source + sx + 1] > threshold) sx++;
      raw.fill(255, row + firstColumn[runStart], row + firstColumn[sx + 1]);
    }
  }

  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 0; // colour type: greyscale
  // Bytes 10–12: deflate compression, adaptive filtering, no interlace (all 0).
  const data = await deflateAsync(raw, DEFLATE_OPTIONS);
  return Buffer.concat([PNG_SIGNATURE, chunk('IHDR', header), chunk('IDAT', data), chunk('IEND', Buffer.alloc(0))]);
}

function chunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Computes the CRC-32 (ISO 3309) of a PNG chunk, because zlib.crc32 is missing before Node.js 20.15. */
function crc32(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC_TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();
