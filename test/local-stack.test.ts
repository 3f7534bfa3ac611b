import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import { Client, Connection } from '@temporalio/client';
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import { afterEach, describe, expect, it } from 'vitest';

import { SEARCH_ATTRIBUTES, startDevServer } from '../infra/local/dev-server';
import { startMoto } from '../infra/local/moto';
import { findFreePort, isPortFree } from '../infra/local/ports';
import { isAlive, readCmdline, spawnLogged, stopPid } from '../infra/local/process-control';
import { stackDown, stackStatus, stackUp } from '../infra/local/stack';
import { resolveTemporalCli } from '../infra/local/temporal-cli';

/** listSearchAttributes reports types as temporal.api.enums.v1.IndexedValueType numbers. */
const INDEXED_VALUE_TYPES: Record<string, number> = { Keyword: 2, Int: 3, Double: 4 };
const BATCH_ID_KEY = defineSearchAttributeKey('SkyNewtBatchId', SearchAttributeType.KEYWORD);
const FAKE_WORKER_SCRIPT = "console.log('SKYNEWT_WORKER_READY'); setInterval(() => {}, 1000)";

const cleanups: Array<() => Promise<unknown>> = [];

afterEach(async () => {
  // Stops whatever a failed test left running; each cleanup is safe to run twice.
  for (const cleanup of cleanups.splice(0).reverse()) {
    await cleanup().catch(() => undefined);
  }
});

function makeTempDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'skynewt-local-stack-'));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function httpStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      })
      .once('error', reject);
  });
}

async function listCustomAttributes(address: string, namespace = 'default'): Promise<Record<string, number>> {
  const connection = await Connection.connect({ address });
  try {
    const response = await connection.operatorService.listSearchAttributes({ namespace });
    return response.customAttributes as Record<string, number>;
  } finally {
    await connection.close();
  }
}

async function listWorkflowIds(address: string, query: string): Promise<string[]> {
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection });
    const ids: string[] = [];
    for await (const execution of client.workflow.list({ query })) {
      ids.push(execution.workflowId);
    }
    return ids;
  } finally {
    await connection.close();
  }
}

function expectSearchAttributesRegistered(registered: Record<string, number>): void {
  for (const attribute of SEARCH_ATTRIBUTES) {
    expect(registered[attribute.name], attribute.name).toBe(INDEXED_VALUE_TYPES[attribute.type]);
  }
}

describe('local stack', { timeout: 180_000 }, () => {
  it('dev server keeps workflows across restart', async () => {
    const dir = makeTempDir();
    const dbFile = path.join(dir, 'temporal.db');
    const logFile = path.join(dir, 'temporal.log');
    const grpcPort = await findFreePort();
    const uiPort = await findFreePort();

    const startedAt = Date.now();
    const first = await startDevServer({ grpcPort, uiPort, dbFile, logFile });
    console.info(`dev server with UI ready in ${Date.now() - startedAt} ms`);
    cleanups.push(first.stop);

    expect(first.address).toBe(`127.0.0.1:${grpcPort}`);
    expect(first.uiUrl).toBe(`http://127.0.0.1:${uiPort}`);
    expect(await httpStatus(first.uiUrl!)).toBe(200);
    expect(readCmdline(first.pid)).toContain(first.cmdlineMarker);
    expectSearchAttributesRegistered(await listCustomAttributes(first.address));

    const workflowId = `local-stack-probe-${process.pid}-${Date.now()}`;
    const connection = await Connection.connect({ address: first.address });
    try {
      // No worker polls this task queue, so the workflow stays Running with no task ever completed.
      await new Client({ connection }).workflow.start('SkyNewtLocalStackProbe', {
        taskQueue: 'local-stack-test-throwaway',
        workflowId,
        typedSearchAttributes: [{ key: BATCH_ID_KEY, value: workflowId }],
      });
    } finally {
      await connection.close();
    }

    await first.stop();
    expect(isAlive(first.pid)).toBe(false);

    const restartedAt = Date.now();
    const second = await startDevServer({ grpcPort, uiPort, dbFile, logFile, headless: true });
    console.info(`headless dev server restarted on existing database in ${Date.now() - restartedAt} ms`);
    cleanups.push(second.stop);

    expect(second.uiUrl).toBeNull();
    expectSearchAttributesRegistered(await listCustomAttributes(second.address));
    expect(await listWorkflowIds(second.address, `WorkflowId = '${workflowId}'`)).toEqual([workflowId]);
    expect(await listWorkflowIds(second.address, `SkyNewtBatchId = '${workflowId}'`)).toEqual([workflowId]);

    await second.stop();
    expect(isAlive(second.pid)).toBe(false);
  });

  it('dev server registers attributes missing from database', async () => {
    const dir = makeTempDir();
    const dbFile = path.join(dir, 'temporal.db');
    const logFile = path.join(dir, 'temporal.log');
    const grpcPort = await findFreePort();

    // A database created without --search-attribute; start-dev does not add them to existing namespaces.
    const args = ['server', 'start-dev', '--ip', '127.0.0.1', '--port', String(grpcPort), '--headless'];
    const bare = await spawnLogged(resolveTemporalCli(), [...args, '--db-filename', dbFile], { logFile });
    cleanups.push(() => stopPid(bare.pid, { graceMs: 5_000 }));
    let bareRegistered: Record<string, number> | null = null;
    for (let attempt = 0; attempt < 100 && bareRegistered === null; attempt++) {
      bareRegistered = await listCustomAttributes(`127.0.0.1:${grpcPort}`).catch(() => null);
      if (bareRegistered === null) {
        await sleep(200);
      }
    }
    expect(bareRegistered).not.toBeNull();
    expect(bareRegistered!.SkyNewtBatchId).toBeUndefined();
    expect(await stopPid(bare.pid, { expectCmdline: `--port ${grpcPort}`, graceMs: 10_000 })).toBe('terminated');

    const server = await startDevServer({ grpcPort, dbFile, logFile, headless: true });
    cleanups.push(server.stop);
    expectSearchAttributesRegistered(await listCustomAttributes(server.address));
    await server.stop();
    expect(isAlive(server.pid)).toBe(false);
  });

  it('dev server applies namespace and dynamic config', async () => {
    const logFile = path.join(makeTempDir(), 'temporal.log');
    const grpcPort = await findFreePort();
    const namespace = 'skynewt-local-test';

    await expect(startDevServer({ grpcPort, logFile, headless: true, dynamicConfig: ['no-value'] })).rejects.toThrow(
      /Invalid dynamic config entry "no-value"/,
    );

    const server = await startDevServer({
      grpcPort,
      logFile,
      headless: true,
      namespace,
      dynamicConfig: ['limit.maxIDLength=500'],
      detached: true,
    });
    cleanups.push(server.stop);

    const cmdline = readCmdline(server.pid);
    expect(cmdline).toContain(`--namespace ${namespace}`);
    expect(cmdline).toContain('--dynamic-config-value limit.maxIDLength=500');
    expectSearchAttributesRegistered(await listCustomAttributes(server.address, namespace));

    await server.stop();
    expect(isAlive(server.pid)).toBe(false);
  });

  it('dev server rejects occupied port', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)));
    const grpcPort = (blocker.address() as net.AddressInfo).port;
    const logFile = path.join(makeTempDir(), 'temporal.log');

    await expect(startDevServer({ grpcPort, logFile, headless: true })).rejects.toThrow(/already in use/);
  });

  it('moto starts and responds', async () => {
    const logFile = path.join(makeTempDir(), 'moto.log');
    const startedAt = Date.now();
    const moto = await startMoto({ logFile });
    console.info(`moto ready in ${Date.now() - startedAt} ms`);
    cleanups.push(moto.stop);

    expect(moto.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await httpStatus(`${moto.endpoint}/moto-api/`)).toBe(200);

    await moto.stop();
    expect(isAlive(moto.pid)).toBe(false);
  });

  it('stopPid checks cmdline and escalates', async () => {
    const logFile = path.join(makeTempDir(), 'sleepers.log');
    const sleeper = await spawnLogged(process.execPath, ['-e', 'setInterval(() => {}, 1000) // polite-sleeper'], { logFile });
    cleanups.push(() => stopPid(sleeper.pid, { graceMs: 1_000 }));

    expect(await stopPid(sleeper.pid, { expectCmdline: 'some-other-program', graceMs: 1_000 })).toBe('cmdline-mismatch');
    expect(isAlive(sleeper.pid)).toBe(true);
    expect(await stopPid(sleeper.pid, { expectCmdline: 'polite-sleeper', graceMs: 5_000 })).toBe('terminated');
    expect(isAlive(sleeper.pid)).toBe(false);
    expect(await stopPid(sleeper.pid, { graceMs: 1_000 })).toBe('not-running');

    const stubbornScript = "process.on('SIGTERM', () => {}); console.log('ready'); setInterval(() => {}, 1000)";
    const stubborn = await spawnLogged(process.execPath, ['-e', stubbornScript], { logFile, detached: true });
    cleanups.push(() => stopPid(stubborn.pid, { graceMs: 0 }));
    // Wait for the handler to be installed, or SIGTERM would end the process before it could ignore it.
    while (!fs.readFileSync(logFile, 'utf8').includes('ready')) {
      await sleep(50);
    }
    expect(await stopPid(stubborn.pid, { graceMs: 500, processGroup: true })).toBe('killed');
    expect(isAlive(stubborn.pid)).toBe(false);
  });

  it('stackUp and stackDown stop recorded PIDs', async () => {
    const home = makeTempDir();
    const grpcPort = await findFreePort();
    const uiPort = await findFreePort();
    cleanups.push(() => stackDown(home));

    // The inference worker is a shell that starts the real worker as its child, like npx or tsx do.
    const grandchildScript = "console.log('SKYNEWT_WORKER_READY pid=' + process.pid); setInterval(() => {}, 1000)";
    const options = {
      home,
      grpcPort,
      uiPort,
      workers: [
        { name: 'orchestrator' as const, command: [process.execPath, '-e', FAKE_WORKER_SCRIPT] },
        {
          name: 'inference' as const,
          command: ['/bin/sh', '-c', `"${process.execPath}" -e "${grandchildScript}"; echo shell-wrapper`],
        },
      ],
    };

    // A process with the same command line that the stack did not start must survive stackDown.
    const decoyLog = path.join(home, 'decoy.log');
    const decoy = await spawnLogged(process.execPath, ['-e', FAKE_WORKER_SCRIPT], { logFile: decoyLog, detached: true });
    cleanups.push(() => stopPid(decoy.pid, { graceMs: 1_000, processGroup: true }));

    const state = await stackUp(options);
    expect(state.ready).toBe(true);
    expect(state.address).toBe(`127.0.0.1:${grpcPort}`);
    expect(state.processes.map((recorded) => recorded.name)).toEqual(['temporal-server', 'orchestrator', 'inference']);
    for (const recorded of state.processes) {
      expect(isAlive(recorded.pid), recorded.name).toBe(true);
    }
    expect(JSON.parse(fs.readFileSync(path.join(home, 'stack.json'), 'utf8'))).toEqual(state);

    const inferenceLog = fs.readFileSync(path.join(home, 'logs', 'inference.log'), 'utf8');
    const grandchildPid = Number(/SKYNEWT_WORKER_READY pid=(\d+)/.exec(inferenceLog)?.[1]);
    expect(isAlive(grandchildPid)).toBe(true);

    const again = await stackUp(options);
    expect(again.processes.map((recorded) => recorded.pid)).toEqual(state.processes.map((recorded) => recorded.pid));
    expect(stackStatus(home)?.running).toBe(true);

    const report = await stackDown(home);
    expect(report.stopped).toEqual([
      { name: 'inference', pid: state.processes[2]!.pid, outcome: 'terminated' },
      { name: 'orchestrator', pid: state.processes[1]!.pid, outcome: 'terminated' },
      { name: 'temporal-server', pid: state.processes[0]!.pid, outcome: 'terminated' },
    ]);
    for (const recorded of state.processes) {
      expect(isAlive(recorded.pid), recorded.name).toBe(false);
    }
    expect(isAlive(grandchildPid)).toBe(false);
    expect(isAlive(decoy.pid)).toBe(true);
    expect(fs.existsSync(path.join(home, 'stack.json'))).toBe(false);
    expect(stackStatus(home)).toBeNull();
    expect((await stackDown(home)).stopped).toEqual([]);
  });

  it('stackUp restarts partly dead stack', async () => {
    const home = makeTempDir();
    cleanups.push(() => stackDown(home));
    const options = {
      home,
      grpcPort: await findFreePort(),
      uiPort: await findFreePort(),
      workers: [
        { name: 'orchestrator' as const, command: [process.execPath, '-e', FAKE_WORKER_SCRIPT] },
        { name: 'inference' as const, command: [process.execPath, '-e', `${FAKE_WORKER_SCRIPT} // inference`] },
      ],
    };

    const first = await stackUp(options);
    const [server, orchestrator, inference] = first.processes;
    expect(await stopPid(orchestrator!.pid, { graceMs: 5_000, processGroup: true })).toBe('terminated');
    expect(stackStatus(home)?.running).toBe(false);

    const second = await stackUp(options);
    expect(isAlive(server!.pid)).toBe(false);
    expect(isAlive(inference!.pid)).toBe(false);
    for (const recorded of second.processes) {
      expect(isAlive(recorded.pid), recorded.name).toBe(true);
    }
    expect(stackStatus(home)?.running).toBe(true);

    const report = await stackDown(home);
    expect(report.stopped.map((entry) => entry.outcome)).toEqual(['terminated', 'terminated', 'terminated']);
  });

  it('stackUp cleans up after failed worker', async () => {
    const home = makeTempDir();
    const grpcPort = await findFreePort();
    const uiPort = await findFreePort();
    cleanups.push(() => stackDown(home));

    const failing = stackUp({
      home,
      grpcPort,
      uiPort,
      workers: [
        { name: 'orchestrator', command: [process.execPath, '-e', FAKE_WORKER_SCRIPT] },
        { name: 'inference', command: [process.execPath, '-e', "console.error('model file missing'); process.exit(3)"] },
      ],
    });

    await expect(failing).rejects.toThrow(/inference .* exited \(exit code 3\)[\s\S]*model file missing/);
    expect(fs.existsSync(path.join(home, 'stack.json'))).toBe(false);
    expect(await isPortFree(grpcPort)).toBe(true);
    expect(await isPortFree(uiPort)).toBe(true);
  });

  it('stackUp rejects worker that never reports ready', async () => {
    const home = makeTempDir();
    const grpcPort = await findFreePort();
    cleanups.push(() => stackDown(home));

    const failing = stackUp({
      home,
      grpcPort,
      uiPort: await findFreePort(),
      readyTimeoutMs: 1_000,
      workers: [{ name: 'orchestrator', command: [process.execPath, '-e', 'setInterval(() => {}, 1000)'] }],
    });

    await expect(failing).rejects.toThrow(/did not print SKYNEWT_WORKER_READY within 1000 ms/);
    expect(fs.existsSync(path.join(home, 'stack.json'))).toBe(false);
    expect(await isPortFree(grpcPort)).toBe(true);
  });
});
