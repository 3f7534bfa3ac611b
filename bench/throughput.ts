/**
 * Throughput benchmark: the same images through the same model in one process, so the ratios
 * compare like with like.
 *
 *   raw         a plain loop with no Temporal and no storage: read the file, decode and
 *               preprocess with sharp, run onnxruntime-node (same intra-op threads), threshold.
 *   overlapped  the same loop, reading and decoding `--prefetch` images ahead of the model, as
 *               SkyNewt does: the throughput this host can reach with this model.
 *   skynewt     a full batch through a private local stack: Temporal dev server, orchestrator and
 *               inference workers, listing, checkpointed shards, masks and JSONL written to disk.
 *
 * Baselines and batches alternate: raw, overlapped, batch, raw, overlapped, batch, ..., raw,
 * overlapped. Each batch is compared with the mean of each baseline just before and after it, so
 * a drift in the machine's speed during the script shifts both sides of a ratio alike. `--variants` adds batches with
 * prefetching off (`no-prefetch`) or `--batch` images per model call (`batched`).
 *
 * Usage: npm run bench -- [--images 1000] [--shard-size 200] [--rounds 3] [--threads N]
 *          [--prefetch 4] [--variants no-prefetch,batched] [--batch 4] [--execution-provider cuda,cpu]
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import * as ort from 'onnxruntime-node';
import { hostExecutionProviders, parseExecutionProviders } from '../activities/inference/execution-providers';
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
  kind: 'raw' | 'overlapped' | 'batch';
  images: number;
  seconds: number;
  imagesPerSecond: number;
  modelLoads: number;
  firstResultSeconds: number;
  /** For a batch, the manifest's inference busy fraction and bottleneck stage. */
  utilisation?: string;
}

const { values: flags } = parseArgs({
  options: {
    images: { type: 'string', default: '1000' },
    'shard-size': { type: 'string', default: '200' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    prefetch: { type: 'string', default: '4' },
    batch: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '3' },
    variants: { type: 'string', default: '' },
    'execution-provider': { type: 'string' },
  },
});
const IMAGES = Number(flags.images);
const SHARD_SIZE = Number(flags['shard-size']);
const THREADS = Number(flags.threads);
const PREFETCH = Number(flags.prefetch);
const BATCH = Number(flags.batch);
const ROUNDS = Number(flags.rounds);
const PROVIDERS = flags['execution-provider'] ? parseExecutionProviders(flags['execution-provider'], '--execution-provider') : hostExecutionProviders();
const VARIANTS = flags.variants.split(',').filter(Boolean);
for (const variant of VARIANTS) {
  if (variant !== 'no-prefetch' && variant !== 'batched') throw new Error(`Unknown variant "${variant}"; use no-prefetch, batched or both, comma-separated.`);
}

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

/** Runs the baseline loop; with `ahead` above 1, reading and decoding run that many images ahead of the model. */
async function rawLoop(folder: string, model: ModelVersion, ahead: number): Promise<Run> {
  const started = performance.now();
  const session = await ort.InferenceSession.create(readFileSync(new URL(model.artifactUri)), { intraOpNumThreads: THREADS, executionProviders: PROVIDERS });
  let firstResult = 0;
  const files = readdirSync(folder).sort();
  const prepare = async (file: string) => decodeImage(await readFile(path.join(folder, file)), model.preprocess, 100_000_000);
  const queue = files.slice(0, ahead).map(prepare);
  for (let i = 0; i < files.length; i++) {
    const image = await queue.shift()!;
    if (i + ahead < files.length) queue.push(prepare(files[i + ahead]));
    const output = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', image.tensor, image.dims) });
    const map = output[session.outputNames[0]];
    findRegions(map.data as Float32Array, model.preprocess.width, model.preprocess.height, model.threshold, image.width, image.height);
    if (firstResult === 0) firstResult = performance.now();
  }
  await session.release();
  const seconds = (performance.now() - started) / 1000;
  return {
    name: ahead > 1 ? `overlapped raw loop (${ahead})` : 'raw loop',
    kind: ahead > 1 ? 'overlapped' : 'raw',
    images: files.length,
    seconds,
    imagesPerSecond: files.length / seconds,
    modelLoads: 1,
    firstResultSeconds: (firstResult - started) / 1000,
  };
}

async function skynewtBatch(name: string, scratch: string, folder: string, model: ModelVersion, registry: LocalRegistry, prefetchDepth: number, inferenceBatch = 1): Promise<Run> {
  let firstResult = 0;
  const stack = await startPrivateStack({
    scratch,
    name: `prefetch-${prefetchDepth}-batch-${inferenceBatch}`,
    registry,
    intraOpThreads: THREADS,
    executionProviders: PROVIDERS,
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
    const { utilisation } = await stack.client.manifest(batchId);
    return {
      name,
      kind: 'batch',
      images: summary.images,
      seconds,
      imagesPerSecond: summary.images / seconds,
      modelLoads: stack.runner.modelLoads,
      firstResultSeconds: (firstResult - started) / 1000,
      utilisation: utilisation === null ? undefined : `${utilisation.inferenceBusyFraction.toFixed(3)} ${utilisation.bottleneck}`,
    };
  } finally {
    await stack.stop();
  }
}

/** Baselines around one batch that differ by more than this factor mean the machine's speed changed under it. */
const UNSTABLE_BRACKET = 1.2;

/** Returns the mean speed of the nearest `kind` baseline before and after run `i`. */
function bracket(runs: Run[], i: number, kind: Run['kind']): number {
  const before = runs.slice(0, i).reverse().find((run) => run.kind === kind)!;
  const after = runs.slice(i + 1).find((run) => run.kind === kind)!;
  const spread = Math.max(before.imagesPerSecond, after.imagesPerSecond) / Math.min(before.imagesPerSecond, after.imagesPerSecond);
  if (spread > UNSTABLE_BRACKET) {
    console.log(`Warning: the ${kind} baselines around row ${i + 1} of the table differ by a factor of ${spread.toFixed(2)}; other load changed the machine's speed, so its ratio is unreliable. Rerun on a quiet machine.`);
  }
  return (before.imagesPerSecond + after.imagesPerSecond) / 2;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Prints every run in order, each batch's ratio to both baselines around it, and the median ratios of the default batches. */
function printRuns(runs: Run[]): void {
  const ratios = new Map<Run, { raw: number; overlapped: number }>();
  runs.forEach((run, i) => {
    if (run.kind === 'batch') ratios.set(run, { raw: run.imagesPerSecond / bracket(runs, i, 'raw'), overlapped: run.imagesPerSecond / bracket(runs, i, 'overlapped') });
  });

  console.log('');
  console.log('run                          images  seconds  images/s  to raw  to overlapped  model loads  first result (s)  busy, bottleneck');
  for (const run of runs) {
    const ratio = ratios.get(run);
    console.log(
      `${run.name.padEnd(29)}${String(run.images).padStart(6)}${run.seconds.toFixed(1).padStart(9)}${run.imagesPerSecond.toFixed(2).padStart(10)}${(ratio?.raw.toFixed(3) ?? '').padStart(8)}${(ratio?.overlapped.toFixed(3) ?? '').padStart(15)}${String(run.modelLoads).padStart(13)}${run.firstResultSeconds.toFixed(2).padStart(17)}  ${run.utilisation ?? ''}`,
    );
  }

  const defaults = [...ratios].filter(([run]) => run.name === `SkyNewt (prefetch ${PREFETCH})`).map(([, ratio]) => ratio);
  if (defaults.length > 0) {
    console.log('');
    for (const kind of ['raw', 'overlapped'] as const) {
      const values = defaults.map((ratio) => ratio[kind]);
      console.log(`SkyNewt (prefetch ${PREFETCH}) to ${kind === 'raw' ? 'raw loop' : 'overlapped raw loop'}: median ratio ${median(values).toFixed(3)} over ${values.length} batches (lowest ${Math.min(...values).toFixed(3)}, highest ${Math.max(...values).toFixed(3)})`);
    }
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
    console.log(`Load average before: ${os.loadavg().map((load) => load.toFixed(2)).join(', ')}`);
    console.log(`Benchmark: ${IMAGES} images, ${detection.name}@${detection.version} at ${model.preprocess.width}x${model.preprocess.height}, ${THREADS} intra-op threads, execution providers ${PROVIDERS.join(',')}, shard size ${SHARD_SIZE}, ${os.availableParallelism()} cores, Node.js ${process.version}, onnxruntime-node ${ort.env.versions.common}`);

    const batches: Array<{ name: string; prefetch: number; inferenceBatch: number }> = [
      ...Array.from({ length: ROUNDS }, () => ({ name: `SkyNewt (prefetch ${PREFETCH})`, prefetch: PREFETCH, inferenceBatch: 1 })),
      ...VARIANTS.map((variant) =>
        variant === 'batched'
          ? { name: `SkyNewt (${BATCH} per call)`, prefetch: 1, inferenceBatch: BATCH }
          : { name: 'SkyNewt (prefetch off)', prefetch: 1, inferenceBatch: 1 },
      ),
    ];
    const runs: Run[] = [await rawLoop(folder, model, 1), await rawLoop(folder, model, PREFETCH)];
    for (const batch of batches) {
      runs.push(await skynewtBatch(batch.name, scratch, folder, model, registry, batch.prefetch, batch.inferenceBatch));
      runs.push(await rawLoop(folder, model, 1), await rawLoop(folder, model, PREFETCH));
    }
    printRuns(runs);
    console.log(`Load average after: ${os.loadavg().map((load) => load.toFixed(2)).join(', ')}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
