/**
 * Orchestration scale benchmark: a dry-run batch over a manifest of N image references (no image
 * is read and no model runs) through a private local stack, to measure what SkyNewt itself costs
 * per shard. Prints wall time, shards per second, the largest history of any workflow run, and
 * the worker process's resident memory as the batch goes.
 *
 * Usage: npm run bench:scale -- [--images 1000000] [--shard-size 200] [--concurrency 32]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { LocalRegistry } from '../activities/registry/local-registry';
import { DEMO_MODELS } from '../cli/demo';
import { registerModel } from '../cli/model-commands';
import { startPrivateStack } from './private-stack';

const { values: flags } = parseArgs({
  options: {
    images: { type: 'string', default: '1000000' },
    'shard-size': { type: 'string', default: '200' },
    concurrency: { type: 'string', default: '32' },
  },
});
const IMAGES = Number(flags.images);
const SHARD_SIZE = Number(flags['shard-size']);
const CONCURRENCY = Number(flags.concurrency);

async function main(): Promise<void> {
  Runtime.install({ logger: new DefaultLogger('WARN') });
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'skynewt-scale-'));
  const registry = new LocalRegistry(path.join(scratch, 'registry'));
  const stack = await startPrivateStack({
    scratch,
    name: 'scale',
    registry,
    intraOpThreads: 1,
    inference: { shardConcurrency: CONCURRENCY, prewarmModels: [] },
  });
  const { client } = stack;
  try {
    const { detection } = DEMO_MODELS;
    const { model } = await registerModel(registry, detection.name, detection.file, { ...detection.options, version: detection.version });
    const manifest = path.join(scratch, 'images.txt');
    const lines: string[] = [];
    for (let i = 0; i < IMAGES; i++) lines.push(`file:///data/images/img-${String(i).padStart(7, '0')}.png`);
    writeFileSync(manifest, lines.join('\n') + '\n');
    lines.length = 0;

    console.log(`Scale benchmark: dry run over ${IMAGES} image references, shard size ${SHARD_SIZE}, ${CONCURRENCY} shards in flight, ${os.availableParallelism()} cores, Node.js ${process.version}`);
    const started = performance.now();
    const { batchId } = await client.startBatch({
      input: manifest,
      model: `${model.name}@${model.version}`,
      shardSize: SHARD_SIZE,
      checkpointEvery: SHARD_SIZE,
      maxConcurrentShards: CONCURRENCY,
      dryRun: true,
    });

    // Resident memory of this process (both workers), sampled each second with the shards done.
    // With --expose-gc, the live JavaScript heap after a full collection is sampled too. It
    // separates retained memory from garbage V8 has not collected yet.
    let peakRss = 0;
    let peakHeap = 0;
    const samples: string[] = [];
    const collect = (globalThis as { gc?: () => void }).gc;
    const sampler = setInterval(() => {
      collect?.();
      const rss = process.memoryUsage.rss();
      const heap = process.memoryUsage().heapUsed;
      peakRss = Math.max(peakRss, rss);
      peakHeap = Math.max(peakHeap, heap);
      void client.progress(batchId).then((progress) => {
        const seconds = (performance.now() - started) / 1000;
        if (samples.length === 0 || seconds - Number(samples[samples.length - 1].split(' ')[0]) >= 15) {
          samples.push(`${seconds.toFixed(0)} s: ${progress.shardsDone}/${progress.shards} shards, run ${progress.run}, RSS ${(rss / 2 ** 20).toFixed(0)} MiB, heap ${(heap / 2 ** 20).toFixed(0)} MiB`);
          console.log(samples[samples.length - 1]);
        }
      }, () => undefined);
    }, 1000);

    const summary = await client.result(batchId);
    const seconds = (performance.now() - started) / 1000;
    clearInterval(sampler);

    let largestHistory = 0;
    let runs = 0;
    for await (const execution of client.client.workflow.list({ query: `WorkflowId = '${batchId}'` })) {
      runs += 1;
      largestHistory = Math.max(largestHistory, execution.historyLength ?? 0);
    }
    console.log('');
    console.log(`images                 ${summary.images}`);
    console.log(`shards                 ${summary.shards}`);
    console.log(`wall time              ${seconds.toFixed(1)} s`);
    console.log(`shards per second      ${(summary.shards / seconds).toFixed(2)}`);
    console.log(`images per second      ${(summary.images / seconds).toFixed(0)}`);
    console.log(`workflow runs          ${runs} (continue-as-new ${runs - 1} times)`);
    console.log(`largest history        ${largestHistory} events`);
    console.log(`peak worker RSS        ${(peakRss / 2 ** 20).toFixed(0)} MiB (orchestrator and inference workers in one process)`);
    if (collect) console.log(`peak live heap         ${(peakHeap / 2 ** 20).toFixed(0)} MiB (after a full collection)`);
  } finally {
    await stack.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
