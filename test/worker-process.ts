/**
 * The real inference worker entry point in a child process, for tests that kill or drain it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { defaultPayloadConverter } from '@temporalio/common';
import { inject } from 'vitest';
import type { ShardCheckpoint } from '../activities/types';
import { tsNodeCommand } from '../infra/local/node-command';
import type { TestStack } from './helpers';

export interface WorkerProcess {
  child: ChildProcess;
  /** Everything the worker printed so far. */
  output(): string;
  /** Resolves with the exit code or signal once the process ends. */
  exited: Promise<number | string>;
}

/** Starts the inference worker on the stack's registry and waits until it polls. */
export async function spawnInferenceWorker(stack: TestStack, instanceId: string, env: Record<string, string> = {}): Promise<WorkerProcess> {
  return spawnWorker('workers/inference.ts', {
    SKYNEWT_TEMPORAL_ADDRESS: inject('temporalAddress'),
    SKYNEWT_TASK_QUEUE: stack.gpuTaskQueue,
    SKYNEWT_REGISTRY_DIR: path.join(stack.home, 'registry'),
    SKYNEWT_INSTANCE_ID: instanceId,
    SKYNEWT_INTRA_OP_THREADS: '1',
    ...env,
  });
}

/** Starts the orchestrator worker on the stack's task queue, registry and results folder. */
export async function spawnOrchestratorWorker(stack: TestStack, env: Record<string, string> = {}): Promise<WorkerProcess> {
  return spawnWorker('workers/orchestrator.ts', {
    SKYNEWT_TEMPORAL_ADDRESS: inject('temporalAddress'),
    SKYNEWT_ORCHESTRATOR_TASK_QUEUE: stack.taskQueue,
    SKYNEWT_REGISTRY_DIR: path.join(stack.home, 'registry'),
    SKYNEWT_RESULTS: stack.resultsRoot,
    ...env,
  });
}

async function spawnWorker(script: string, env: Record<string, string>): Promise<WorkerProcess> {
  const [command, ...args] = tsNodeCommand(script);
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('SKYNEWT_WORKER_READY')) resolve();
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    void exited.then((code) => reject(new Error(`${script} exited with ${code} before it was ready:\n${output}`)));
  });
  return { child, output: () => output, exited };
}

/** Stops a worker process that is still running, by its PID. */
export function killIfRunning(worker: WorkerProcess | undefined): void {
  if (worker && worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGKILL');
}

/** Reads the checkpoint of the batch's first running shard from the server, or null. */
export async function pendingCheckpoint(stack: TestStack, batchId: string): Promise<ShardCheckpoint | null> {
  const description = await stack.client.handle(batchId).describe();
  const payload = description.raw.pendingActivities?.[0]?.heartbeatDetails?.payloads?.[0];
  return payload ? defaultPayloadConverter.fromPayload<ShardCheckpoint>(payload) : null;
}

/** Polls until the running shard has checkpointed at least `cursor` images; bounded to 120 s. */
export async function waitForCursor(stack: TestStack, batchId: string, cursor: number): Promise<ShardCheckpoint> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const checkpoint = await pendingCheckpoint(stack, batchId);
    if (checkpoint && checkpoint.cursor >= cursor) return checkpoint;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`Batch ${batchId} did not checkpoint ${cursor} images within 120 s.`);
}
