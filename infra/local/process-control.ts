import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Outcome of a stopPid call. */
export type StopOutcome =
  /** The PID (or its process group) was already gone. */
  | 'not-running'
  /** The PID is alive but its command line lacks the expected marker, so it was left alone. */
  | 'cmdline-mismatch'
  /** The process exited within the grace period after SIGTERM. */
  | 'terminated'
  /** The process ignored SIGTERM for the grace period and was ended with SIGKILL. */
  | 'killed';

export interface StopPidOptions {
  /** Substring that /proc/<pid>/cmdline (NUL separators read as spaces) must contain before any signal is sent. */
  expectCmdline?: string;
  /** Milliseconds to wait after SIGTERM before sending SIGKILL. */
  graceMs: number;
  /**
   * Signal the whole process group when `pid` leads one (a child spawned with `detached: true`),
   * so that children of wrappers such as npx or tsx stop too. Ignored when `pid` is not a group leader.
   */
  processGroup?: boolean;
}

const POLL_INTERVAL_MS = 100;
const SIGKILL_WAIT_MS = 5_000;
const PROC_AVAILABLE = fs.existsSync('/proc/self/stat');

interface ProcStat {
  state: string;
  processGroup: number;
}

/** Reads the state letter and process group id from /proc/<pid>/stat; null when unreadable. */
function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name in brackets may contain spaces and ')', so fields are counted after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { state: fields[0] ?? '', processGroup: Number(fields[2]) };
}

/** Returns true when `pid` exists and is not a zombie. A process owned by another user still counts as alive. */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) {
    return false;
  }
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') {
      return false;
    }
  }
  // Signal 0 still reaches a zombie until its parent reaps it, but a zombie runs no code.
  return readProcStat(pid)?.state !== 'Z';
}

/** Returns true while any non-zombie process is in process group `pgid`. */
function isGroupAlive(pgid: number): boolean {
  if (!PROC_AVAILABLE) {
    try {
      process.kill(-pgid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  }
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    const stat = readProcStat(Number(entry));
    if (stat !== null && stat.processGroup === pgid && stat.state !== 'Z') {
      return true;
    }
  }
  return false;
}

/** Reads the command line of `pid` with arguments joined by spaces; null when the process is gone or unreadable. */
export function readCmdline(pid: number): string | null {
  if (PROC_AVAILABLE) {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      return null;
    }
  }
  // Platforms without /proc (macOS) expose the same text through ps.
  const result = spawnSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' });
  return result.status === 0 ? result.stdout.trim() : null;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() >= deadline) {
      return false;
    }
    await sleep(POLL_INTERVAL_MS);
  }
  return true;
}

function sendSignal(target: number, signal: NodeJS.Signals): void {
  try {
    process.kill(target, signal);
  } catch (error) {
    // ESRCH means the target exited between the liveness check and the signal.
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') {
      throw error;
    }
  }
}

/**
 * Stops `pid` with SIGTERM, then SIGKILL after `graceMs`, after checking that its command line
 * contains `expectCmdline` so that a PID reused by an unrelated process is never signalled.
 * Throws when the process is still alive 5 s after SIGKILL.
 */
export async function stopPid(pid: number, options: StopPidOptions): Promise<StopOutcome> {
  if (!isAlive(pid)) {
    return 'not-running';
  }

  if (options.expectCmdline !== undefined) {
    const cmdline = readCmdline(pid);
    if (cmdline === null) {
      return isAlive(pid) ? 'cmdline-mismatch' : 'not-running';
    }
    if (!cmdline.includes(options.expectCmdline)) {
      return 'cmdline-mismatch';
    }
  }

  const leadsGroup = options.processGroup === true && readProcStat(pid)?.processGroup === pid;
  const target = leadsGroup ? -pid : pid;
  const isGone = leadsGroup ? () => !isGroupAlive(pid) : () => !isAlive(pid);

  sendSignal(target, 'SIGTERM');
  if (await waitUntil(isGone, options.graceMs)) {
    return 'terminated';
  }

  sendSignal(target, 'SIGKILL');
  if (await waitUntil(isGone, SIGKILL_WAIT_MS)) {
    return 'killed';
  }
  throw new Error(`PID ${pid} is still alive ${SIGKILL_WAIT_MS} ms after SIGKILL; check it with \`ps -p ${pid}\`.`);
}

export interface SpawnLoggedOptions {
  /** File that receives stdout and stderr, opened for appending; missing parent folders are created. */
  logFile: string;
  /** Start the child in its own process group and unref it, so it outlives the caller. */
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

/** Spawns `command` with stdout and stderr appended to a log file; rejects when the executable cannot start. */
export async function spawnLogged(
  command: string,
  args: readonly string[],
  options: SpawnLoggedOptions,
): Promise<ChildProcess & { pid: number }> {
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  const logFd = fs.openSync(options.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(command, args, {
      stdio: ['ignore', logFd, logFd],
      detached: options.detached === true,
      env: options.env ?? process.env,
      cwd: options.cwd,
    });
  } finally {
    // The child has its own copy of the descriptor.
    fs.closeSync(logFd);
  }

  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve);
    child.once('error', (error) => reject(new Error(`Failed to start ${command}: ${error.message}`)));
  });
  if (options.detached === true) {
    child.unref();
  } else {
    // A child that is not detached belongs to the caller, so it gets SIGTERM when the caller exits
    // (a failed test setup, for example) instead of living on as an orphan. Killing signals skip this hook.
    const endChild = (): void => {
      child.kill('SIGTERM');
    };
    process.once('exit', endChild);
    child.once('exit', () => process.removeListener('exit', endChild));
  }
  return child as ChildProcess & { pid: number };
}

/** Tracks a child's exit; the returned function gives "exit code N" or "signal S" once it has exited, else null. */
export function watchExit(child: ChildProcess): () => string | null {
  let status: string | null = null;
  child.once('exit', (code, signal) => {
    status = signal !== null ? `signal ${signal}` : `exit code ${code}`;
  });
  return () => status;
}

/** Returns the last `maxLines` lines of a log file (reading at most its last 64 KiB), or a note when it is missing. */
export function readLogTail(logFile: string, maxLines = 40): string {
  const maxBytes = 64 * 1024;
  let fd: number;
  try {
    fd = fs.openSync(logFile, 'r');
  } catch {
    return `(log file ${logFile} does not exist)`;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    fs.readSync(fd, buffer, 0, length, size - length);
    const lines = buffer.toString('utf8').split('\n');
    if (lines.at(-1) === '') {
      lines.pop();
    }
    return lines.slice(-maxLines).join('\n');
  } finally {
    fs.closeSync(fd);
  }
}
