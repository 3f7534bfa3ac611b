/**
 * Throughput benchmark: the same images through the same model, measured three ways in one
 * process, so the ratios compare like with like:
 *
 *   raw       a plain loop with no Temporal and no storage: read the file, decode and
 *             preprocess with sharp, run onnxruntime-node (same intra-op threads), threshold.
 *   skynewt   a full batch through a private local stack: Temporal dev server, orchestrator and
 *             inference workers, listing, checkpointed shards, masks and JSONL written to disk.
 *   no-prefetch  the same batch with prefetching off, to show what the pipeline buys.
 *   batched   the same batch with prefetching off and `--batch` images per model call.
 *
 * Usage: npm run bench -- [--images 1000] [--shard-size 200] [--threads N] [--prefetch 4] [--batch 4]
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import * as ort from 'onnxruntime-node';
import { decodeImage } from '../activities/inference/preprocess';
import { findRegions } from '../activities/inference/segmentation';
import { LocalRegistry } from '../activities/registry/local-registry';
import type { ModelVersion } from '../activities/types';
import { DEMO_MODELS } from '../cli/demo';
import { registerModel } from '../cli/model-commands';
import { loadConfig } from '../workers/config';
import { startPrivateStack } from './private-stack';

interface Run {
  name: string;
  images: number;
  seconds: number;
  imagesPerSecond: number;
  modelLoads: number;
  firstResultSeconds: number;
}

const { values: flags } = parseArgs({
  options: {
    images: { type: 'string', default: '1000' },
    'shard-size': { type: 'string', default: '200' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    prefetch: { type: 'string', default: '4' },
    batch: { type: 'string', default: '4' },
  },
});
const IMAGES = Number(flags.images);
const SHARD_SIZE = Number(flags['shard-size']);
const THREADS = Number(flags.threads);
const PREFETCH = Number(flags.prefetch);
const BATCH = Number(flags.batch);

/** Copies the sample images under distinct names until there are `count` of them. */
function imageFolder(scratch: string, count: number): string {
  const samples = path.join(loadConfig().home, 'samples');
  const names = readdirSync(samples).filter((name) => /\.(png|jpe?g)$/i.test(name)).sort();
  if (names.length === 0) throw new Error(`No sample images in ${samples}; run: node infra/local/bootstrap.js`);
  const folder = path.join(scratch, 'images');
  mkdirSync(folder, { recursive: true });
  for (let i = 0; i < count; i++) copyFileSync(path.join(samples, names[i % names.length]), path.join(folder, `img-${String(i).padStart(6, '0')}${path.extname(names[i % names.length])}`));
  return folder;
}

async function rawLoop(folder: string, model: ModelVersion): Promise<Run> {
  const started = performance.now();
  const session = await ort.InferenceSession.create(readFileSync(new URL(model.artifactUri)), { intraOpNumThreads: THREADS });
  let firstResult = 0;
  const files = readdirSync(folder).sort();
  for (const file of files) {
    const image = await decodeImage(readFileSync(path.join(folder, file)), model.preprocess, 100_000_000);
    const output = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', image.tensor, image.dims) });
    const map = output[session.outputNames[0]];
    findRegions(map.data as Float32Array, model.preprocess.width, model.preprocess.height, model.threshold, image.width, image.height);
    if (firstResult === 0) firstResult = performance.now();
  }
  await session.release();
  const seconds = (performance.now() - started) / 1000;
  return { name: 'raw loop (no Temporal, no storage)', images: files.length, seconds, imagesPerSecond: files.length / seconds, modelLoads: 1, firstResultSeconds: (firstResult - started) / 1000 };
}

async function skynewtBatch(name: string, scratch: string, folder: string, model: ModelVersion, registry: LocalRegistry, prefetchDepth: number, inferenceBatch = 1): Promise<Run> {
  let firstResult = 0;
  const stack = await startPrivateStack({
    scratch,
    name: `prefetch-${prefetchDepth}-batch-${inferenceBatch}`,
    registry,
    intraOpThreads: THREADS,
    inference: {
      shardConcurrency: 1,
      prewarmModels: [`${model.name}@${model.version}`],
      prefetchDepth,
      inferenceBatch,
      trace: () => {
        if (firstResult === 0) firstResult = performance.now();
      },
    },
  });
  try {
    const started = performance.now();
    const { batchId } = await stack.client.startBatch({ input: folder, model: `${model.name}@${model.version}`, shardSize: SHARD_SIZE });
    const summary = await stack.client.result(batchId);
    const seconds = (performance.now() - started) / 1000;
    return { name, images: summary.images, seconds, imagesPerSecond: summary.images / seconds, modelLoads: stack.runner.modelLoads, firstResultSeconds: (firstResult - started) / 1000 };
  } finally {
    await stack.stop();
  }
}

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'skynewt-bench-'));
  try {
    const registry = new LocalRegistry(path.join(scratch, 'registry'));
    const { detection } = DEMO_MODELS;
    const { model } = await registerModel(registry, detection.name, detection.file, { ...detection.options, version: detection.version });
    const folder = imageFolder(scratch, IMAGES);
    console.log(`Benchmark: ${IMAGES} images, ${detection.name}@${detection.version} at ${model.preprocess.width}x${model.preprocess.height}, ${THREADS} intra-op threads, shard size ${SHARD_SIZE}, ${os.availableParallelism()} cores, Node.js ${process.version}, onnxruntime-node ${ort.env.versions.common}`);

    const raw = await rawLoop(folder, model);
    const batch = await skynewtBatch(`SkyNewt batch (prefetch ${PREFETCH})`, scratch, folder, model, registry, PREFETCH);
    const serial = await skynewtBatch('SkyNewt batch (prefetch off)', scratch, folder, model, registry, 1);
    const batched = await skynewtBatch(`SkyNewt batch (${BATCH} per call)`, scratch, folder, model, registry, 1, BATCH);

    console.log('');
    console.log('run                                  images  seconds  images/s  ratio to raw  model loads  first result (s)');
    for (const run of [raw, batch, serial, batched]) {
      console.log(
        `${run.name.padEnd(37)}${String(run.images).padStart(6)}${run.seconds.toFixed(1).padStart(9)}${run.imagesPerSecond.toFixed(2).padStart(10)}${(run.imagesPerSecond / raw.imagesPerSecond).toFixed(3).padStart(14)}${String(run.modelLoads).padStart(13)}${run.firstResultSeconds.toFixed(2).padStart(17)}`,
      );
    }
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
