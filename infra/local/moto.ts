import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { findFreePort, isPortFree } from './ports';
import { readLogTail, spawnLogged, stopPid, watchExit } from './process-control';
import { REPO_ROOT } from './temporal-cli';

const READY_TIMEOUT_MS = 30_000;
const RETRY_INTERVAL_MS = 200;
const STOP_GRACE_MS = 10_000;

export interface MotoOptions {
  /** Port on 127.0.0.1; default: a free port chosen by the OS. */
  port?: number;
  /** File that receives moto_server's stdout and stderr (appended). */
  logFile: string;
  /** Start in its own process group and unref, so moto outlives the calling process. */
  detached?: boolean;
  /** Repository root whose .venv contains moto_server; default: this checkout. */
  root?: string;
}

export interface MotoServer {
  pid: number;
  /** Endpoint URL for AWS SDK clients, `http://127.0.0.1:<port>`. */
  endpoint: string;
  /** Substring of moto_server's command line, for stopPid's PID-reuse check. */
  cmdlineMarker: string;
  /** Sends SIGTERM, waits up to 10 s, then sends SIGKILL. */
  stop(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resolves true when any HTTP response arrives from `url` within 1 s, whatever its status. */
function answersHttp(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const request = http.get(url, { timeout: 1_000 }, (response) => {
      response.resume();
      resolve(true);
    });
    request.once('timeout', () => request.destroy());
    request.once('error', () => resolve(false));
  });
}

/**
 * Starts moto_server (the local AWS API mock installed into .venv by infra/local/bootstrap.js)
 * and resolves once GET /moto-api/ responds, within 30 s. On failure moto is stopped and the
 * error includes the log tail.
 */
export async function startMoto(options: MotoOptions): Promise<MotoServer> {
  const root = options.root ?? REPO_ROOT;
  const executable = path.join(root, '.venv', 'bin', 'moto_server');
  if (!fs.existsSync(executable)) {
    throw new Error(`moto_server not found at ${executable}; run \`node infra/local/bootstrap.js\` to install it.`);
  }

  const port = options.port ?? (await findFreePort());
  if (!(await isPortFree(port))) {
    throw new Error(`Port ${port} on 127.0.0.1 is already in use; stop the process using it or choose another port.`);
  }

  const detached = options.detached === true;
  const child = await spawnLogged(executable, ['-H', '127.0.0.1', '-p', String(port)], {
    logFile: options.logFile,
    detached,
  });
  const exitStatus = watchExit(child);

  const pid = child.pid;
  const endpoint = `http://127.0.0.1:${port}`;
  const cmdlineMarker = `-H 127.0.0.1 -p ${port}`;
  const stop = async (): Promise<void> => {
    await stopPid(pid, { expectCmdline: cmdlineMarker, graceMs: STOP_GRACE_MS, processGroup: detached });
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  let failure: string | null = null;
  while (!(await answersHttp(`${endpoint}/moto-api/`))) {
    const exit = exitStatus();
    if (exit !== null) {
      failure = `moto_server exited (${exit}) before answering on ${endpoint}.`;
      break;
    }
    if (Date.now() >= deadline) {
      failure = `moto_server did not answer on ${endpoint} within ${READY_TIMEOUT_MS / 1000} s.`;
      break;
    }
    await sleep(RETRY_INTERVAL_MS);
  }

  if (failure !== null) {
    await stop();
    throw new Error(`${failure}\nLast lines of ${options.logFile}:\n${readLogTail(options.logFile)}`);
  }
  return { pid, endpoint, cmdlineMarker, stop };
}
