/**
 * `skynewt up|down|worker`: the embedded local stack (Temporal dev server, orchestrator worker,
 * inference worker) on 127.0.0.1, with its state under `.skynewt/`.
 */
import path from 'node:path';
import type { Command } from 'commander';
import { tsNodeCommand } from '../infra/local/node-command';
import { stackDown, stackUp, type StackState } from '../infra/local/stack';
import { loadConfig } from '../workers/config';
import { printJson, printTable, UsageError } from './output';

export interface UpOptions {
  port?: string;
  uiPort?: string;
  json?: boolean;
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
      { name: 'inference', command: tsNodeCommand('workers/inference.ts'), env },
    ],
  });
}

export function addStackCommands(program: Command): void {
  program
    .command('up')
    .description('start the local stack on 127.0.0.1: Temporal dev server, orchestrator and inference workers')
    .option('--port <port>', 'Temporal gRPC port (default 7233)')
    .option('--ui-port <port>', 'Temporal Web UI port (default 8233)')
    .option('--json', 'print JSON')
    .action(async (options: UpOptions) => {
      const state = await ensureStack(options);
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
    .action(async (role: string) => {
      if (role === 'orchestrator') await import('../workers/orchestrator').then((m) => m.runOrchestratorWorker());
      else if (role === 'inference') await import('../workers/inference').then((m) => m.runInferenceWorker());
      else throw new UsageError(`Invalid worker role ${JSON.stringify(role)}: expected orchestrator or inference.`);
    });
}
