/**
 * The chaos drill: one batch on a private local stack (its own dev server on free ports of
 * 127.0.0.1) with several inference workers, while spot termination notices and SIGKILLs hit
 * random workers at random times. Each notice goes through that worker's own fake metadata
 * service; every stopped worker is replaced. Bounded: at most `notices + kills` events, all
 * within `windowSeconds`, and the batch must end within `timeoutSeconds`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, NativeConnection, Runtime, type WorkerOptions } from '@temporalio/worker';
import { createOrchestratorActivities } from '../../activities/orchestrator-activities';
import { LocalRegistry } from '../../activities/registry/local-registry';
import { createObjectStore } from '../../activities/storage/stores';
import { toFileUri } from '../../activities/storage/uri';
import { SkyNewtClient } from '../../client/skynewt-client';
import { DEMO_MODELS } from '../../cli/demo';
import { registerModel } from '../../cli/model-commands';
import { createOrchestratorWorker } from '../../workers/orchestrator';
import { startDevServer } from './dev-server';
import { startFakeImds, type FakeImds } from './fake-imds';
import { tsNodeCommand } from './node-command';
import { findFreePort } from './ports';
import { computeDrillReport, type DrillEvent, type DrillReport } from './drill-report';

export interface DrillOptions {
  images: number;
  workers: number;
  /** Shards each inference worker runs at once; a free slot lets a handed-back shard resume at once. */
  shardConcurrency: number;
  notices: number;
  kills: number;
  shardSize: number;
  checkpointEvery: number;
  /** Events happen at random times within this many seconds of the batch start. */
  windowSeconds: number;
  /** The drill gives up when the batch has not ended after this many seconds. */
  timeoutSeconds: number;
  /** Seed of the event schedule, so a run can be repeated. */
  seed: number;
  /** Folder of sample images to copy from. */
  samplesDir: string;
  /** A prebuilt workflow bundle; without it the orchestrator bundles `workflows/` (seconds). */
  workflowBundle?: WorkerOptions['workflowBundle'];
  log?: (message: string) => void;
}

interface WorkerSlot {
  host: string;
  imds: FakeImds;
  child: ChildProcess;
  exited: Promise<void>;
}

/** A small deterministic generator (mulberry32), so a seed repeats a schedule. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

export async function runChaosDrill(options: DrillOptions): Promise<DrillReport> {
  const log = options.log ?? (() => undefined);
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'skynewt-drill-'));
  const trace = path.join(scratch, 'trace.jsonl');
  const slots: WorkerSlot[] = [];
  /** When each worker process ended, in epoch milliseconds, by host. */
  const exits = new Map<string, number>();
  let nextHost = 1;
  try {
    Runtime.install({ logger: new DefaultLogger('WARN') });
  } catch {
    // A runtime is already installed in this process.
  }

  const server = await startDevServer({ grpcPort: await findFreePort(), uiPort: await findFreePort(), headless: true, logFile: path.join(scratch, 'temporal.log') });
  const nativeConnection = await NativeConnection.connect({ address: server.address });
  const connection = await Connection.connect({ address: server.address });
  let orchestratorRun: Promise<void> | undefined;
  let stopOrchestrator = () => undefined as void;

  try {
    const registry = new LocalRegistry(path.join(scratch, 'registry'));
    const { detection } = DEMO_MODELS;
    const { model } = await registerModel(registry, detection.name, detection.file, { ...detection.options, version: detection.version });
    const folder = copyImages(options.samplesDir, path.join(scratch, 'images'), options.images);
    const resultsRoot = toFileUri(path.join(scratch, 'results'));
    const store = createObjectStore();
    const orchestrator = await createOrchestratorWorker({
      connection: nativeConnection,
      namespace: 'default',
      activities: createOrchestratorActivities({ store, registry, resultsRoot }),
      workflowBundle: options.workflowBundle,
    });
    orchestratorRun = orchestrator.run();
    stopOrchestrator = () => orchestrator.shutdown();

    const startWorker = async (): Promise<WorkerSlot> => {
      const host = `i-drill${String(nextHost++).padStart(4, '0')}`;
      const imds = await startFakeImds({ 'instance-id': host });
      const [command, ...args] = tsNodeCommand('workers/inference.ts');
      const child = spawn(command, args, {
        env: {
          ...process.env,
          SKYNEWT_TEMPORAL_ADDRESS: server.address,
          SKYNEWT_REGISTRY_DIR: path.join(scratch, 'registry'),
          SKYNEWT_EC2: 'true',
          SKYNEWT_IMDS_URL: imds.url,
          SKYNEWT_SPOT_POLL_MS: '250',
          SKYNEWT_INTRA_OP_THREADS: '1',
          SKYNEWT_SHARD_CONCURRENCY: String(options.shardConcurrency),
          SKYNEWT_TRACE_FILE: trace,
          // The worker reads EC2 metadata from the fake, but AWS credentials never from it.
          AWS_EC2_METADATA_DISABLED: 'true',
          SKYNEWT_INSTANCE_ID: '',
        },
        stdio: 'ignore',
      });
      const exited = new Promise<void>((resolve) => child.once('exit', () => {
        exits.set(host, Date.now());
        resolve();
      }));
      const slot = { host, imds, child, exited };
      slots.push(slot);
      return slot;
    };
    for (let i = 0; i < options.workers; i++) await startWorker();

    const client = new SkyNewtClient({ client: new Client({ connection }), store });
    const { batchId } = await client.startBatch({
      input: folder,
      model: `${model.name}@${model.version}`,
      shardSize: options.shardSize,
      checkpointEvery: options.checkpointEvery,
      maxConcurrentShards: options.workers * options.shardConcurrency,
      // The drill measures spot recovery, so shards stay on the spot queue however often they move.
      preemptionsBeforeOnDemand: 0,
    });
    const startedAt = Date.now();
    log(`Batch ${batchId}: ${options.images} images, ${options.workers} workers, ${options.notices} notices and ${options.kills} kills within ${options.windowSeconds} s`);

    const next = random(options.seed);
    const kinds: Array<'notice' | 'kill'> = [...Array(options.notices).fill('notice'), ...Array(options.kills).fill('kill')];
    const schedule = kinds.map((kind) => ({ kind, atMs: 1_000 + next() * (options.windowSeconds * 1000 - 1_000) })).sort((a, b) => a.atMs - b.atMs);
    const events: DrillEvent[] = [];
    const done = client.result(batchId).then(() => true, () => true);
    let finished = false;
    void done.then(() => (finished = true));

    for (const planned of schedule) {
      const wait = startedAt + planned.atMs - Date.now();
      if (wait > 0) await Promise.race([done, new Promise((resolve) => setTimeout(resolve, wait))]);
      if (finished) break;
      const live = slots.filter((slot) => slot.child.exitCode === null && slot.child.signalCode === null);
      if (live.length === 0) continue;
      const target = live[Math.floor(next() * live.length)];
      events.push({ kind: planned.kind, host: target.host, atMs: Date.now() });
      log(`${planned.kind === 'notice' ? 'Spot notice to' : 'SIGKILL to'} ${target.host} at ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
      if (planned.kind === 'notice') target.imds.issueTermination();
      else target.child.kill('SIGKILL');
      // A replacement joins once the old worker is gone, as a fleet would launch one.
      void target.exited.then(() => (finished ? undefined : startWorker()));
    }

    const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), options.timeoutSeconds * 1000).unref());
    if (!(await Promise.race([done, timeout]))) throw new Error(`The drill batch ${batchId} did not finish within ${options.timeoutSeconds} s.`);
    return await computeDrillReport({ client, store, batchId, events, exits, traceFile: trace, images: options.images, shardSize: options.shardSize });
  } finally {
    for (const slot of slots) {
      if (slot.child.exitCode === null && slot.child.signalCode === null) slot.child.kill('SIGKILL');
      await slot.exited;
      await slot.imds.close();
    }
    stopOrchestrator();
    await orchestratorRun?.catch(() => undefined);
    await connection.close();
    await nativeConnection.close();
    await server.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Copies the sample images under distinct names until there are `count` of them. */
function copyImages(samplesDir: string, folder: string, count: number): string {
  const names = readdirSync(samplesDir).filter((name) => /\.(png|jpe?g)$/i.test(name)).sort();
  if (names.length === 0) throw new Error(`No sample images in ${samplesDir}; fetch them with: node infra/local/bootstrap.js`);
  mkdirSync(folder, { recursive: true });
  for (let i = 0; i < count; i++) {
    const name = names[i % names.length];
    copyFileSync(path.join(samplesDir, name), path.join(folder, `img-${String(i).padStart(6, '0')}${path.extname(name)}`));
  }
  return folder;
}
