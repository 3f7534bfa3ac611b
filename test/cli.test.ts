import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, Connection } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_MODELS } from '../cli/demo';
import { isAlive } from '../infra/local/process-control';
import { findFreePort } from '../infra/local/ports';
import { sampleFolder, tempDir } from './helpers';

const run = promisify(execFile);
const CLI = path.resolve(__dirname, '..', 'cli', 'skynewt.js');

describe('skynewt command line', () => {
  let env: NodeJS.ProcessEnv;
  let home: string;

  /** Runs the CLI and returns its stdout; rejects with stderr on a non-zero exit. */
  async function skynewt(...args: string[]): Promise<string> {
    const { stdout } = await run(process.execPath, [CLI, ...args], { env, timeout: 170_000 });
    return stdout;
  }

  async function skynewtFails(...args: string[]): Promise<string> {
    const err = await skynewt(...args).then(() => null, (error: { stderr: string; code: number }) => error);
    expect(err).not.toBeNull();
    expect(err!.code).toBe(1);
    return err!.stderr;
  }

  beforeAll(async () => {
    home = tempDir('cli-home');
    env = {
      ...process.env,
      SKYNEWT_HOME: home,
      SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${await findFreePort()}`,
      SKYNEWT_UI_URL: `http://127.0.0.1:${await findFreePort()}`,
    };
  });
  afterAll(async () => {
    await skynewt('down').catch(() => undefined);
  });

  it('runs batches and keeps them across down and up', async () => {
    const up = JSON.parse(await skynewt('up', '--inference-workers', '2', '--json'));
    expect(up.address).toBe(env.SKYNEWT_TEMPORAL_ADDRESS);
    expect(up.processes.map((entry: { name: string }) => entry.name).sort()).toEqual(['inference-1', 'inference-2', 'orchestrator', 'temporal-server']);
    // Two workers on this host split its cores and its price.
    const ready = readFileSync(path.join(home, 'logs', 'inference-2.log'), 'utf8');
    expect(ready).toContain(`intraOpThreads=${Math.max(1, Math.floor(os.availableParallelism() / 2))} `);
    expect(ready).toContain('workersOnHost=2');
    expect(ready).toContain('executionProviders=cpu executionProviderSource=host gpus=0');

    const { detection } = DEMO_MODELS;
    const registered = JSON.parse(await skynewt('model', 'register', 'detector', detection.file, '--task', 'segmentation', '--input-size', '640x640', '--version', 'v4', '--json'));
    expect(registered.created).toBe(true);
    expect(registered.sha256).toMatch(/^[0-9a-f]{64}$/);
    const again = JSON.parse(await skynewt('model', 'register', 'detector', detection.file, '--task', 'segmentation', '--input-size', '640x640', '--version', 'v4', '--json'));
    expect(again.created).toBe(false);
    const conflict = await skynewtFails('model', 'register', 'detector', detection.file, '--task', 'segmentation', '--input-size', '640x640', '--version', 'v4', '--threshold', '0.5');
    expect(conflict).toContain('detector@v4 is already registered with the same file but other settings (threshold 0.3 → 0.5)');

    const shown = JSON.parse(await skynewt('model', 'show', 'detector@v4', '--json'));
    expect(shown.preprocess).toEqual({ width: 640, height: 640, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
    expect(shown.executionProviders).toBeUndefined();
    await skynewt('model', 'register', 'detector-cpu', detection.file, '--task', 'segmentation', '--input-size', '640x640', '--execution-provider', 'cpu');
    expect(JSON.parse(await skynewt('model', 'show', 'detector-cpu', '--json')).executionProviders).toEqual(['cpu']);

    const folder = sampleFolder(['text.png', 'coins.png', 'camera.png']);
    const summary = JSON.parse(await skynewt('run', folder, '--model', 'detector@v4', '--shard-size', '2', '--wait', '--json'));
    expect(summary.status).toBe('completed');
    expect(summary.workflowId).toBe(summary.batchId);
    expect(summary.images).toBe(3);
    expect(summary.imagesFailed).toBe(0);
    expect(summary.shards).toBe(2);
    expect(summary.model).toEqual({ name: 'detector', version: 'v4', sha256: registered.sha256 });
    expect(summary.costUsd).toBe(0);
    expect(summary.output).toContain(path.join(home, 'results', summary.batchId));
    expect(summary.manifest).toBe(`${summary.output}/manifest.json`);
    // The local stack has no on-demand workers, so a shard that keeps losing its worker stays on its queue.
    const connection = await Connection.connect({ address: env.SKYNEWT_TEMPORAL_ADDRESS! });
    try {
      const history = await new Client({ connection }).workflow.getHandle(summary.batchId).fetchHistory();
      const [payload] = history.events![0].workflowExecutionStartedEventAttributes!.input!.payloads!;
      expect(JSON.parse(Buffer.from(payload.data!).toString('utf8')).onDemandTaskQueue).toBe('skynewt-gpu-spot');
    } finally {
      await connection.close();
    }

    const started = (await skynewt('run', folder, '--model', 'detector')).trim();
    expect(started).toMatch(/^b-\d{8}-\d{6}-[0-9a-f]{6}$/);
    const progress = JSON.parse(await skynewt('status', started, '--json'));
    expect(progress.batchId).toBe(started);
    expect(progress.images === 0 || progress.images === 3).toBe(true);

    const state = JSON.parse(readFileSync(path.join(home, 'stack.json'), 'utf8'));
    await skynewt('down');
    for (const entry of state.processes) expect(isAlive(entry.pid)).toBe(false);

    await skynewt('up');
    expect(await skynewtFails('up', '--inference-workers', '2')).toContain('already running with 1 inference workers; stop it with skynewt down');
    expect(await skynewtFails('cancel', summary.batchId)).toContain(`Batch ${summary.batchId} is not running (workflow COMPLETED)`);
    const manifest = JSON.parse(await skynewt('results', summary.batchId, '--json'));
    expect(manifest.batchId).toBe(summary.batchId);
    expect(manifest.images).toBe(3);
    expect(manifest.shards).toHaveLength(2);
    const second = JSON.parse(await skynewt('status', started, '--json'));
    expect(second.executionStatus).toMatch(/RUNNING|COMPLETED/);
  });

  it('reports errors with their cause', async () => {
    const folder = sampleFolder(['coins.png']);
    const missing = await skynewtFails('run', folder, '--model', 'no-such-model', '--wait');
    expect(missing).toContain('ModelNotFound: ');
    expect(missing).toContain('no-such-model');
    expect(missing).not.toContain('Activity task failed');

    const json = await run(process.execPath, [CLI, 'run', folder, '--model', 'no-such-model', '--wait', '--json'], { env }).then(() => null, (error: { stdout: string }) => error);
    const failed = JSON.parse(json!.stdout);
    expect(failed.status).toBe('failed');
    expect(failed.error).toContain('ModelNotFound');

    const status = JSON.parse(await skynewt('status', failed.batchId, '--json'));
    expect(status.status).toBe('failed');
    expect(status.error).toContain('ModelNotFound');

    await skynewt('run', folder, '--model', 'detector', '--batch-id', 'reused-id', '--wait');
    expect(await skynewtFails('run', folder, '--model', 'detector', '--batch-id', 'reused-id')).toContain('Batch id reused-id is already used');
    expect(await skynewtFails('status', 'never-started')).toContain('Batch never-started not found');
    expect(await skynewtFails('results', failed.batchId)).toContain('ModelNotFound');

    const notOnnx = path.join(folder, 'coins.png');
    expect(await skynewtFails('model', 'register', 'bad', notOnnx, '--task', 'segmentation', '--input-size', '64x64')).toContain('onnxruntime could not load it');
    const { direction } = DEMO_MODELS;
    expect(await skynewtFails('model', 'register', 'bad', direction.file, '--task', 'segmentation', '--input-size', '192x48')).toContain('must output one probability map');
  });

  it.each([
    ['inference', ['--prefetch', '2', '--task-queue', 'cli-foreground'], ['taskQueue=cli-foreground', 'prefetch=2']],
    ['orchestrator', [], ['orchestrator']],
  ])('runs the %s worker in the foreground', async (role, flags, expected) => {
    const child = spawn(process.execPath, [CLI, 'worker', role, ...flags], { env: { ...env, SKYNEWT_ORCHESTRATOR_TASK_QUEUE: 'cli-foreground-orchestrator' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      let output = '';
      const ready = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ready line within 90 s: ${output}`)), 90_000);
        const onData = (chunk: Buffer) => {
          output += chunk.toString();
          const line = output.split('\n').find((entry) => entry.startsWith('SKYNEWT_WORKER_READY'));
          if (line !== undefined) {
            clearTimeout(timer);
            resolve(line);
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        exited.then((code) => reject(new Error(`worker exited with ${code} before it was ready: ${output}`)));
      });
      for (const text of expected) expect(ready).toContain(text);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
  });

  it('rejects invalid worker and model options', async () => {
    const { detection } = DEMO_MODELS;
    expect(await skynewtFails('model', 'register', 'bad', detection.file, '--task', 'segmentation', '--execution-provider', 'rocm')).toContain('Invalid --execution-provider "rocm": rocm is not one of cpu, cuda, tensorrt');
    expect(await skynewtFails('worker', 'inference', '--prefetch', '0')).toContain('Invalid --prefetch "0": expected a whole number of 1 or more.');
    expect(await skynewtFails('worker', 'orchestrator', '--intra-op-threads', '2')).toContain('--intra-op-threads applies to the inference worker only');
    expect(await skynewtFails('up', '--inference-workers', 'two')).toContain('Invalid --inference-workers "two"');
  });

  it('explains a stack that is not running', async () => {
    const stopped = { ...env, SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${await findFreePort()}` };
    const err = await run(process.execPath, [CLI, 'status', 'some-batch'], { env: stopped }).then(() => null, (error: { stderr: string }) => error);
    expect(err?.stderr).toContain('skynewt up');
  });
});
