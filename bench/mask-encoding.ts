/**
 * Mask encoding benchmark: the same probability maps encoded as mask PNGs by sharp's resize and
 * PNG encoder and by SkyNewt's run-length encoder, in one process. The maps are real: the
 * bundled text-detection model's output for each sample image, scaled back to that image's size.
 *
 * Usage: node --import tsx bench/mask-encoding.ts [--repeats 20]
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { encodeMaskPng } from '../activities/inference/mask-png';
import { decodeImage } from '../activities/inference/preprocess';
import { DEMO_MODELS } from '../cli/demo';
import { loadConfig } from '../workers/config';

const { values: flags } = parseArgs({ options: { repeats: { type: 'string', default: '20' } } });
const REPEATS = Number(flags.repeats);
const SIZE = 640;
const THRESHOLD = Number(DEMO_MODELS.detection.options.threshold);

/** Encodes a mask the way SkyNewt did before its own encoder: threshold, then sharp resize and PNG. */
async function sharpMask(prob: Float32Array, width: number, height: number): Promise<Buffer> {
  const mask = Buffer.alloc(SIZE * SIZE);
  for (let i = 0; i < mask.length; i++) if (prob[i] > THRESHOLD) mask[i] = 255;
  return sharp(mask, { raw: { width: SIZE, height: SIZE, channels: 1 } }).resize(width, height, { fit: 'fill', kernel: 'nearest' }).toColourspace('b-w').png().toBuffer();
}

async function main(): Promise<void> {
  const samples = path.join(loadConfig().home, 'samples');
  const names = readdirSync(samples).filter((name) => /\.(png|jpe?g)$/i.test(name)).sort();
  if (names.length === 0) throw new Error(`No sample images in ${samples}; run: node infra/local/bootstrap.js`);
  const session = await ort.InferenceSession.create(readFileSync(DEMO_MODELS.detection.file));
  const spec = { width: SIZE, height: SIZE, mean: [0.485, 0.456, 0.406] as [number, number, number], std: [0.229, 0.224, 0.225] as [number, number, number] };

  const maps: Array<{ prob: Float32Array; width: number; height: number }> = [];
  for (const name of names) {
    const image = await decodeImage(readFileSync(path.join(samples, name)), spec, 100_000_000);
    const output = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', image.tensor, image.dims) });
    maps.push({ prob: output[session.outputNames[0]].data as Float32Array, width: image.width, height: image.height });
  }
  await session.release();

  const encoders = [
    ['sharp resize and PNG', (map: (typeof maps)[number]) => sharpMask(map.prob, map.width, map.height)],
    ['SkyNewt run-length encoder', (map: (typeof maps)[number]) => encodeMaskPng(map.prob, THRESHOLD, SIZE, SIZE, map.width, map.height)],
  ] as const;
  console.log(`Mask encoding: ${maps.length} sample images, ${REPEATS} repeats, Node.js ${process.version}`);
  for (const [name, encode] of encoders) {
    for (const map of maps) await encode(map);
    let bytes = 0;
    const started = performance.now();
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const map of maps) bytes += (await encode(map)).length;
    }
    const count = REPEATS * maps.length;
    console.log(`${name.padEnd(28)}${((performance.now() - started) / count).toFixed(2).padStart(8)} ms a mask${(bytes / count / 1024).toFixed(1).padStart(8)} KiB a mask`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
