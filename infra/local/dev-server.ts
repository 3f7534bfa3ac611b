import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Connection } from '@temporalio/client';
import { acceptsConnections, isPortFree } from './ports';
import { readLogTail, spawnLogged, stopPid, watchExit } from './process-control';
import { resolveTemporalCli } from './temporal-cli';

const execFileAsync = promisify(execFile);

export type SearchAttributeTypeName = 'Text' | 'Keyword' | 'Int' | 'Double' | 'Bool' | 'Datetime' | 'KeywordList';

export interface SearchAttributeDefinition {
  name: string;
  type: SearchAttributeTypeName;
}

/** Custom search attributes that SkyNewt workflows set; every dev server registers them. */
export const SEARCH_ATTRIBUTES: readonly SearchAttributeDefinition[] = [
  { name: 'SkyNewtBatchId', type: 'Keyword' },
  { name: 'SkyNewtModel', type: 'Keyword' },
  { name: 'SkyNewtModelSha256', type: 'Keyword' },
  { name: 'SkyNewtImages', type: 'Int' },
  { name: 'SkyNewtImagesFailed', type: 'Int' },
  { name: 'SkyNewtCostUsd', type: 'Double' },
];

/** Values of the protobuf enum temporal.api.enums.v1.IndexedValueType, as listSearchAttributes returns them. */
const INDEXED_VALUE_TYPES: Record<SearchAttributeTypeName, number> = {
  Text: 1,
  Keyword: 2,
  Int: 3,
  Double: 4,
  Bool: 5,
  Datetime: 6,
  KeywordList: 7,
};

const READY_TIMEOUT_MS = 60_000;
const RETRY_INTERVAL_MS = 250;
const TCP_PROBE_INTERVAL_MS = 50;
const STOP_GRACE_MS = 10_000;

export interface DevServerOptions {
  /** Frontend gRPC port on 127.0.0.1; default 7233. */
  grpcPort?: number;
  /** Web UI port on 127.0.0.1; default 8233. Unused when headless. */
  uiPort?: number;
  /** Run without the Web UI. */
  headless?: boolean;
  /** SQLite file that keeps state across restarts; without it all state is lost when the server stops. */
  dbFile?: string;
  /** File that receives the server's stdout and stderr (appended). */
  logFile: string;
  /** Entries of the form `key=value`, where value is JSON; each becomes one --dynamic-config-value. */
  dynamicConfig?: string[];
  /** Namespace to create at launch and to check the search attributes in; default "default". */
  namespace?: string;
  /** Start in its own process group and unref, so the server outlives the calling process. */
  detached?: boolean;
}

export interface DevServer {
  pid: number;
  /** gRPC address, `127.0.0.1:<grpcPort>`. */
  address: string;
  /** `http://127.0.0.1:<uiPort>`, or null when headless. */
  uiUrl: string | null;
  /** Substring of the server's command line, for stopPid's PID-reuse check. */
  cmdlineMarker: string;
  /** Sends SIGTERM, waits up to 10 s, then sends SIGKILL. */
  stop(): Promise<void>;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function assertPort(name: string, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65_535) {
    throw new Error(`Invalid ${name} ${port}: expected an integer from 1 to 65535.`);
  }
}

/**
 * Checks for --ui-disable-news-fetch, which stops the Web UI from requesting its online newsfeed.
 * CLI v1.9.1 has the flag and v1.5.1 (the Go fallback of bootstrap.js) does not.
 */
function supportsNewsFetchFlag(cli: string): boolean {
  const help = spawnSync(cli, ['server', 'start-dev', '--help'], { encoding: 'utf8', timeout: 10_000 });
  return help.status === 0 && help.stdout.includes('--ui-disable-news-fetch');
}

function buildArgs(cli: string, options: DevServerOptions, grpcPort: number, uiPort: number): string[] {
  const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(grpcPort), '--ui-port', String(uiPort)];
  if (options.headless === true) {
    args.push('--headless');
  } else if (supportsNewsFetchFlag(cli)) {
    args.push('--ui-disable-news-fetch');
  }
  if (options.dbFile !== undefined) {
    args.push('--db-filename', options.dbFile);
  }
  if (options.namespace !== undefined && options.namespace !== 'default') {
    args.push('--namespace', options.namespace);
  }
  for (const entry of options.dynamicConfig ?? []) {
    if (!/^[A-Za-z_][\w.]*=./.test(entry)) {
      throw new Error(`Invalid dynamic config entry "${entry}": expected key=value, where value is JSON.`);
    }
    args.push('--dynamic-config-value', entry);
  }
  args.push('--log-level', 'warn');
  for (const attribute of SEARCH_ATTRIBUTES) {
    args.push('--search-attribute', `${attribute.name}=${attribute.type}`);
  }
  return args;
}

/** Connects once the frontend responds to getSystemInfo; the caller closes the returned connection. */
async function connectWhenReady(port: number, deadline: number, exitStatus: () => string | null): Promise<Connection> {
  const address = `127.0.0.1:${port}`;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    const exit = exitStatus();
    if (exit !== null) {
      throw new Error(`temporal server start-dev exited (${exit}) before accepting connections on ${address}.`);
    }
    // A gRPC connect attempt against a closed port waits out its whole connectTimeout, so probe TCP first.
    if (!(await acceptsConnections(port))) {
      lastError = new Error(`nothing accepts TCP connections on ${address}`);
      await sleep(TCP_PROBE_INTERVAL_MS);
      continue;
    }
    try {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return connection;
      } catch (error) {
        await connection.close();
        throw error;
      }
    } catch (error) {
      lastError = error;
    }
    await sleep(RETRY_INTERVAL_MS);
  }
  throw new Error(
    `Temporal dev server on ${address} did not accept connections within ${READY_TIMEOUT_MS / 1000} s ` +
      `(last error: ${errorMessage(lastError)}).`,
  );
}

async function listCustomAttributes(connection: Connection, namespace: string): Promise<Record<string, number>> {
  const response = await connection.operatorService.listSearchAttributes({ namespace });
  return response.customAttributes as Record<string, number>;
}

/**
 * Waits until SEARCH_ATTRIBUTES are listed with the expected types. `--search-attribute` registers
 * them only in a namespace that the server creates, so a database file created without them
 * (or before an attribute was added to the list) gets the missing ones through
 * `temporal operator search-attribute create`.
 */
async function ensureSearchAttributes(
  connection: Connection,
  cli: string,
  address: string,
  namespace: string,
  deadline: number,
): Promise<void> {
  const typeNames = new Map(Object.entries(INDEXED_VALUE_TYPES).map(([name, value]) => [value, name]));
  let registered = await listCustomAttributes(connection, namespace);

  for (const attribute of SEARCH_ATTRIBUTES) {
    const actual = registered[attribute.name];
    if (actual !== undefined && actual !== INDEXED_VALUE_TYPES[attribute.type]) {
      throw new Error(
        `Search attribute ${attribute.name} is registered as ${typeNames.get(actual) ?? actual} in namespace ` +
          `"${namespace}", but SkyNewt needs ${attribute.type}. A registered type cannot change, so use a new database file.`,
      );
    }
  }

  const missing = SEARCH_ATTRIBUTES.filter((attribute) => registered[attribute.name] === undefined);
  if (missing.length > 0) {
    const names = missing.map((attribute) => `${attribute.name} (${attribute.type})`).join(', ');
    console.info(`dev-server: registering search attributes missing from namespace "${namespace}": ${names}`);
  }
  for (const attribute of missing) {
    const args = ['operator', 'search-attribute', 'create', '--address', address, '--namespace', namespace];
    args.push('--name', attribute.name, '--type', attribute.type);
    try {
      await execFileAsync(cli, args, { timeout: 15_000 });
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr ?? '';
      throw new Error(`Failed to register search attribute ${attribute.name}: ${errorMessage(error)} ${stderr}`.trim());
    }
  }

  while (SEARCH_ATTRIBUTES.some((attribute) => registered[attribute.name] === undefined)) {
    if (Date.now() >= deadline) {
      const absent = SEARCH_ATTRIBUTES.filter((attribute) => registered[attribute.name] === undefined);
      throw new Error(`Search attributes ${absent.map((a) => a.name).join(', ')} are still not listed in "${namespace}".`);
    }
    await sleep(RETRY_INTERVAL_MS);
    registered = await listCustomAttributes(connection, namespace);
  }
}

/**
 * Starts `temporal server start-dev` on 127.0.0.1 and resolves once it accepts gRPC calls and lists
 * SEARCH_ATTRIBUTES, within 60 s. On failure the server is stopped and the error includes the log tail.
 */
export async function startDevServer(options: DevServerOptions): Promise<DevServer> {
  const grpcPort = options.grpcPort ?? 7233;
  const uiPort = options.uiPort ?? 8233;
  const namespace = options.namespace ?? 'default';
  const detached = options.detached === true;
  assertPort('grpcPort', grpcPort);
  assertPort('uiPort', uiPort);

  // A server already on the port would pass the readiness checks in place of the new one.
  const portsToCheck = options.headless === true ? [grpcPort] : [grpcPort, uiPort];
  for (const port of portsToCheck) {
    if (!(await isPortFree(port))) {
      throw new Error(`Port ${port} on 127.0.0.1 is already in use; stop the process using it or choose another port.`);
    }
  }

  const cli = resolveTemporalCli();
  const args = buildArgs(cli, options, grpcPort, uiPort);
  if (options.dbFile !== undefined) {
    fs.mkdirSync(path.dirname(options.dbFile), { recursive: true });
  }

  const child = await spawnLogged(cli, args, { logFile: options.logFile, detached });
  const exitStatus = watchExit(child);

  const pid = child.pid;
  const address = `127.0.0.1:${grpcPort}`;
  const cmdlineMarker = `server start-dev --ip 127.0.0.1 --port ${grpcPort}`;
  const stop = async (): Promise<void> => {
    await stopPid(pid, { expectCmdline: cmdlineMarker, graceMs: STOP_GRACE_MS, processGroup: detached });
  };

  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    const connection = await connectWhenReady(grpcPort, deadline, exitStatus);
    try {
      await ensureSearchAttributes(connection, cli, address, namespace, deadline);
    } finally {
      await connection.close();
    }
  } catch (error) {
    await stop();
    const tail = readLogTail(options.logFile);
    throw new Error(`${errorMessage(error)}\nLast lines of ${options.logFile}:\n${tail}`);
  }

  const uiUrl = options.headless === true ? null : `http://127.0.0.1:${uiPort}`;
  return { pid, address, uiUrl, cmdlineMarker, stop };
}
