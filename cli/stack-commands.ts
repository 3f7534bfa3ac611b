/**
 * `skynewt up|down|worker`: the embedded local stack (Temporal dev server, orchestrator worker,
 * inference worker) on 127.0.0.1, with its state under `.skynewt/`.
 */
import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { tsNodeCommand } from '../infra/local/node-command';
import { stackDown, stackUp, type StackState, type WorkerName } from '../infra/local/stack';
import { visibleGpuCount } from '../activities/inference/execution-providers';
import { planInferenceWorkers } from '../workers/host-plan';
import { loadConfig } from '../workers/config';
import { printJson, printTable, UsageError } from './output';

export interface UpOptions {
  port?: string;
  uiPort?: string;
  inferenceWorkers?: string;
  json?: boolean;
}

/** Flags of `skynewt worker inference`, each the same as one SKYNEWT_* variable. */
export interface InferenceWorkerFlags {
  executionProvider?: string;
  intraOpThreads?: string;
  shardConcurrency?: string;
  prefetch?: string;
  inferenceBatch?: string;
  taskQueue?: string;
}

const INFERENCE_FLAG_VARIABLES: Record<keyof InferenceWorkerFlags, string> = {
  executionProvider: 'SKYNEWT_EXECUTION_PROVIDER',
  intraOpThreads: 'SKYNEWT_INTRA_OP_THREADS',
  shardConcurrency: 'SKYNEWT_SHARD_CONCURRENCY',
  prefetch: 'SKYNEWT_PREFETCH',
  inferenceBatch: 'SKYNEWT_INFERENCE_BATCH',
  taskQueue: 'SKYNEWT_TASK_QUEUE',
};

/** Copies the given flags into `env` as their SKYNEWT_* variables, then checks them by loading the configuration. */
export function applyInferenceFlags(flags: InferenceWorkerFlags, env: NodeJS.ProcessEnv = process.env): void {
  const setFlags = (Object.entries(INFERENCE_FLAG_VARIABLES) as Array<[keyof InferenceWorkerFlags, string]>).filter(([flag]) => flags[flag] !== undefined);
  for (const [flag, variable] of setFlags) env[variable] = flags[flag];
  try {
    loadConfig(env);
  } catch (err) {
    // Name the flag the user typed rather than the variable it was copied into.
    const message = setFlags.reduce((text, [flag, variable]) => text.replace(variable, flagName(flag)), (err as Error).message);
    throw new UsageError(message);
  }
}

/** Returns the command-line spelling of an option key, e.g. `--intra-op-threads` for `intraOpThreads`. */
function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

function workerCount(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const count = Number(value);
  if (!Number.isInteger(count) || count < 1 || count > 64) {
    throw new UsageError(`Invalid --inference-workers ${JSON.stringify(value)}: expected a whole number from 1 to 64.`);
  }
  return count;
}

function port(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1 || number > 65535) {
    throw new UsageError(`Invalid ${flag} ${JSON.stringify(value)}: expected a TCP port from 1 to 65535.`);
  }
  return number;
}

/** Starts the stack unless it already runs; returns its state. */
export async function ensureStack(options: UpOptions = {}): Promise<StackState> {
  const config = loadConfig();
  const [, configuredPort] = config.address.split(':');
  const grpcPort = port('--port', options.port, Number(configuredPort ?? 7233));
  const uiPort = port('--ui-port', options.uiPort, Number(new URL(config.uiUrl).port || 8233));
  const inference = planInferenceWorkers({ workers: workerCount(options.inferenceWorkers), gpus: visibleGpuCount(), cores: os.availableParallelism(), env: process.env });
  const env = {
    SKYNEWT_HOME: config.home,
    SKYNEWT_TEMPORAL_ADDRESS: `127.0.0.1:${grpcPort}`,
    SKYNEWT_UI_URL: `http://127.0.0.1:${uiPort}`,
  };
  return stackUp({
    home: config.home,
    grpcPort,
    uiPort,
    workers: [
      { name: 'orchestrator', command: tsNodeCommand('workers/orchestrator.ts'), env },
      ...inference.map((worker) => ({ name: worker.name as WorkerName, command: tsNodeCommand('workers/inference.ts'), env: { ...env, ...worker.env } })),
    ],
  });
}

export function addStackCommands(program: Command): void {
  program
    .command('up')
    .description('start the local stack on 127.0.0.1: Temporal dev server, orchestrator and inference workers')
    .option('--port <port>', 'Temporal gRPC port (default 7233)')
    .option('--ui-port <port>', 'Temporal Web UI port (default 8233)')
    .option('--inference-workers <n>', 'inference worker processes (default: one per visible GPU, else 1); the CPU cores are split between them')
    .option('--json', 'print JSON')
    .action(async (options: UpOptions) => {
      const state = await ensureStack(options);
      const running = state.processes.filter((process) => process.name.startsWith('inference')).length;
      if (options.inferenceWorkers !== undefined && running !== Number(options.inferenceWorkers)) {
        throw new UsageError(`The local stack is already running with ${running} inference workers; stop it with skynewt down, then run skynewt up --inference-workers ${options.inferenceWorkers}.`);
      }
      if (options.json) return printJson(state);
      console.log(`Local stack running (state in ${path.join(loadConfig().home, 'stack.json')})`);
      printTable([{ temporal: state.address, 'web ui': state.uiUrl ?? '-' }], true);
      printTable(state.processes.map((process) => ({ process: process.name, pid: process.pid })));
    });

  program
    .command('down')
    .description('stop the processes that skynewt up started, by PID')
    .action(async () => {
      const { stopped } = await stackDown(loadConfig().home);
      if (stopped.length === 0) return console.log('Local stack is not running.');
      printTable(stopped.map((entry) => ({ process: entry.name, pid: entry.pid, outcome: entry.outcome })));
    });

  program
    .command('worker <role>')
    .description('run one worker in the foreground: orchestrator or inference')
    .option('--execution-provider <list>', 'inference: onnxruntime execution providers for every model, in order, e.g. cuda,cpu (SKYNEWT_EXECUTION_PROVIDER)')
    .option('--intra-op-threads <n>', 'inference: onnxruntime intra-op threads (SKYNEWT_INTRA_OP_THREADS, default the CPU cores)')
    .option('--shard-concurrency <n>', 'inference: shards run at once (SKYNEWT_SHARD_CONCURRENCY, default 1)')
    .option('--prefetch <n>', 'inference: images prepared ahead of inference, 1 for none (SKYNEWT_PREFETCH, default 4)')
    .option('--inference-batch <n>', 'inference: images per model call (SKYNEWT_INFERENCE_BATCH, default 1)')
    .option('--task-queue <name>', 'inference: task queue to poll (SKYNEWT_TASK_QUEUE, default skynewt-gpu-spot)')
    .action(async (role: string, flags: InferenceWorkerFlags) => {
      const setFlags = Object.keys(flags).filter((flag) => flags[flag as keyof InferenceWorkerFlags] !== undefined);
      if (role !== 'inference' && setFlags.length > 0) {
        throw new UsageError(`Invalid option for the ${role} worker: ${setFlags.map(flagName).join(', ')} applies to the inference worker only.`);
      }
      if (role === 'inference') applyInferenceFlags(flags);
      // require, not import(): the CLI runs TypeScript through tsx's CommonJS hook, and Node's ESM
      // resolver behind import() finds no extensionless .ts path. Loaded here so that other commands
      // do not load the workers.
      if (role === 'orchestrator') await (require('../workers/orchestrator') as typeof import('../workers/orchestrator')).runOrchestratorWorker();
      else if (role === 'inference') await (require('../workers/inference') as typeof import('../workers/inference')).runInferenceWorker();
      else throw new UsageError(`Invalid worker role ${JSON.stringify(role)}: expected orchestrator or inference.`);
    });
}
