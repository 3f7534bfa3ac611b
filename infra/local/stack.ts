import * as fs from 'node:fs';
import * as path from 'node:path';
import { startDevServer } from './dev-server';
import { isAlive, readCmdline, readLogTail, spawnLogged, stopPid, watchExit, type StopOutcome } from './process-control';
import { WORKER_READY_MARKER } from '../../workers/ready';
import { REPO_ROOT } from './temporal-cli';


const DEFAULT_READY_TIMEOUT_MS = 120_000;
const READY_POLL_INTERVAL_MS = 200;
const STOP_GRACE_MS = 10_000;
const SERVER_NAME = 'temporal-server';

/** Worker names; several inference workers on one host are `inference-1` ... `inference-N`. */
export type WorkerName = 'orchestrator' | 'inference' | `inference-${number}`;

export interface StackWorker {
  name: WorkerName;
  /** Executable and arguments, run from the repository root. */
  command: string[];
  /** Added to the caller's environment, after TEMPORAL_ADDRESS (which is set to the dev server's address). */
  env?: Record<string, string>;
  /** Substring of the worker's command line for the PID-reuse check; default: the last element of `command`. */
  cmdlineMarker?: string;
}

export interface StackUpOptions {
  /** The .skynewt folder, which contains stack.json, temporal.db and logs/. */
  home: string;
  grpcPort: number;
  uiPort: number;
  workers: StackWorker[];
  /** Milliseconds each worker has to print WORKER_READY_MARKER (SKYNEWT_WORKER_READY); default 120 000. */
  readyTimeoutMs?: number;
}

export interface StackProcess {
  name: typeof SERVER_NAME | WorkerName;
  pid: number;
  cmdlineMarker: string;
  logFile: string;
}

/** Contents of <home>/stack.json. */
export interface StackState {
  startedAt: string;
  address: string;
  uiUrl: string | null;
  /** False while workers are still starting; a stack left unready by a crashed stackUp is restarted. */
  ready: boolean;
  processes: StackProcess[];
}

export interface StackStatus {
  state: StackState;
  processes: Array<StackProcess & { alive: boolean }>;
  /** True when the stack is ready and every recorded process is alive. */
  running: boolean;
}

/** One process that stackDown (or a failed stackUp) handled, and how stopPid ended for it. */
export interface StoppedProcess {
  name: StackProcess['name'];
  pid: number;
  outcome: StopOutcome;
}

export interface StackDownReport {
  /** Workers in reverse start order, then the server; empty when no stack was recorded. */
  stopped: StoppedProcess[];
}

function stateFile(home: string): string {
  return path.join(home, 'stack.json');
}

function readState(home: string): StackState | null {
  let text: string;
  try {
    text = fs.readFileSync(stateFile(home), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      return null;
    }
    throw error;
  }
  return JSON.parse(text) as StackState;
}

/** Writes through a temporary file and rename, so a reader never sees half a file. */
function writeState(home: string, state: StackState): void {
  const temporary = `${stateFile(home)}.${process.pid}.tmp`;
  fs.writeFileSync(temporary, `${JSON.stringify(state, null, 2)}\n`);
  fs.renameSync(temporary, stateFile(home));
}

/** Checks that a recorded PID is alive and that its command line still contains the recorded marker. */
function isRecordedProcessAlive(recorded: StackProcess): boolean {
  return isAlive(recorded.pid) && (readCmdline(recorded.pid)?.includes(recorded.cmdlineMarker) ?? false);
}

/** Stops workers in reverse start order, then the server; each stop checks the recorded command-line marker. */
async function stopRecorded(processes: StackProcess[]): Promise<StoppedProcess[]> {
  const workers = processes.filter((recorded) => recorded.name !== SERVER_NAME).reverse();
  const servers = processes.filter((recorded) => recorded.name === SERVER_NAME);
  const stopped: StoppedProcess[] = [];
  const failures: string[] = [];

  for (const recorded of [...workers, ...servers]) {
    try {
      const outcome = await stopPid(recorded.pid, {
        expectCmdline: recorded.cmdlineMarker,
        graceMs: STOP_GRACE_MS,
        processGroup: true,
      });
      stopped.push({ name: recorded.name, pid: recorded.pid, outcome });
    } catch (error) {
      failures.push(`${recorded.name} (PID ${recorded.pid}): ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  if (failures.length > 0) {
    throw new Error(`Failed to stop ${failures.join('; ')}`);
  }
  return stopped;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls the worker's log, from the byte offset where this start began, for WORKER_READY_MARKER. */
async function waitForWorkerReady(
  recorded: StackProcess,
  logOffset: number,
  exitStatus: () => string | null,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const output = fs.readFileSync(recorded.logFile).subarray(logOffset).toString('utf8');
    if (output.includes(WORKER_READY_MARKER)) {
      return;
    }
    const exit = exitStatus();
    if (exit !== null) {
      throw new Error(`Worker ${recorded.name} (PID ${recorded.pid}) exited (${exit}) before printing ${WORKER_READY_MARKER}.`);
    }
    if (Date.now() >= deadline) {
      throw new Error(`Worker ${recorded.name} (PID ${recorded.pid}) did not print ${WORKER_READY_MARKER} within ${timeoutMs} ms.`);
    }
    await sleep(READY_POLL_INTERVAL_MS);
  }
}

function validateWorkers(workers: StackWorker[]): void {
  const seen = new Set<string>();
  for (const worker of workers) {
    if (seen.has(worker.name)) {
      throw new Error(`Duplicate worker name "${worker.name}": each worker writes <home>/logs/<name>.log, so names must be unique.`);
    }
    seen.add(worker.name);
    if (worker.command.length === 0) {
      throw new Error(`Worker "${worker.name}" has an empty command.`);
    }
  }
}

/**
 * Starts the dev server (state in <home>/temporal.db) and the workers, all detached, waits for each
 * worker to print WORKER_READY_MARKER, and records the PIDs in <home>/stack.json. Returns the recorded
 * state without starting anything when that stack is already running; a partly dead or unready
 * stack is stopped and started again. On failure every process started here is stopped.
 */
export async function stackUp(options: StackUpOptions): Promise<StackState> {
  const { home } = options;
  const logDir = path.join(home, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  validateWorkers(options.workers);

  const existing = readState(home);
  if (existing !== null) {
    if (existing.ready && existing.processes.every(isRecordedProcessAlive)) {
      return existing;
    }
    console.info(`stack: ${stateFile(home)} describes a stopped or unready stack; stopping its remaining processes`);
    await stopRecorded(existing.processes);
    fs.rmSync(stateFile(home), { force: true });
  }

  const server = await startDevServer({
    grpcPort: options.grpcPort,
    uiPort: options.uiPort,
    dbFile: path.join(home, 'temporal.db'),
    logFile: path.join(logDir, `${SERVER_NAME}.log`),
    detached: true,
  });
  const state: StackState = {
    startedAt: new Date().toISOString(),
    address: server.address,
    uiUrl: server.uiUrl,
    ready: false,
    processes: [
      { name: SERVER_NAME, pid: server.pid, cmdlineMarker: server.cmdlineMarker, logFile: path.join(logDir, `${SERVER_NAME}.log`) },
    ],
  };
  writeState(home, state);

  const readinessChecks: Array<{ recorded: StackProcess; wait: () => Promise<void> }> = [];
  try {
    for (const worker of options.workers) {
      const logFile = path.join(logDir, `${worker.name}.log`);
      fs.appendFileSync(logFile, `--- stackUp ${new Date().toISOString()} ---\n`);
      const logOffset = fs.statSync(logFile).size;

      const [executable, ...args] = worker.command as [string, ...string[]];
      const child = await spawnLogged(executable, args, {
        logFile,
        detached: true,
        cwd: REPO_ROOT,
        env: { ...process.env, TEMPORAL_ADDRESS: server.address, ...worker.env },
      });
      const exitStatus = watchExit(child);
      const recorded: StackProcess = {
        name: worker.name,
        pid: child.pid,
        cmdlineMarker: worker.cmdlineMarker ?? worker.command[worker.command.length - 1]!,
        logFile,
      };
      state.processes.push(recorded);
      writeState(home, state);
      const timeoutMs = options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
      readinessChecks.push({ recorded, wait: () => waitForWorkerReady(recorded, logOffset, exitStatus, timeoutMs) });
    }

    // Workers start in parallel, so all of them are waited for and every failure is reported.
    const results = await Promise.allSettled(readinessChecks.map((check) => check.wait()));
    const details: string[] = [];
    results.forEach((result, index) => {
      if (result.status === 'rejected') {
        const { logFile } = readinessChecks[index]!.recorded;
        const message = result.reason instanceof Error ? result.reason.message : String(result.reason);
        details.push(`${message}\nLast lines of ${logFile}:\n${readLogTail(logFile)}`);
      }
    });
    if (details.length > 0) {
      throw new Error(details.join('\n\n'));
    }
  } catch (error) {
    await stopRecorded(state.processes);
    fs.rmSync(stateFile(home), { force: true });
    throw error;
  }

  state.ready = true;
  writeState(home, state);
  return state;
}

/** Stops exactly the PIDs recorded in <home>/stack.json (workers first) and removes the file. */
export async function stackDown(home: string): Promise<StackDownReport> {
  const state = readState(home);
  if (state === null) {
    return { stopped: [] };
  }
  const stopped = await stopRecorded(state.processes);
  fs.rmSync(stateFile(home), { force: true });
  return { stopped };
}

/** Reads <home>/stack.json and checks each recorded process; null when no stack is recorded. */
export function stackStatus(home: string): StackStatus | null {
  const state = readState(home);
  if (state === null) {
    return null;
  }
  const processes = state.processes.map((recorded) => ({ ...recorded, alive: isRecordedProcessAlive(recorded) }));
  return { state, processes, running: state.ready && processes.every((recorded) => recorded.alive) };
}
